"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, for every OpenAI-compatible route.

The client raises BadRequestError, AuthenticationError, NotFoundError, UnprocessableEntityError... from the
status. Bad audio keeps the statuses of the consultation upload (413, 415, 422), bad parameters are 400, a
missing or invalid key 401; a worker's typed error keeps its status; an unknown worker failure is 502, a
timeout 504, no broker 503. Also here: what every route of the package shares (the task wait, the audit).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.audit import audit
from workers.core.errors import MedvoiceError
from workers.core.records import User
from workers.core.settings import Settings


class OpenAIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status_code: int, message: str, code: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code, self.message, self.code, self.param = status_code, message, code, param
        self.headers = headers

    @classmethod
    def from_typed(cls, exc: MedvoiceError, param: str | None = None) -> OpenAIError:
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        return cls(exc.http_status, str(exc), exc.code, param=field if isinstance(field, str) else param)

    @property
    def kind(self) -> str:
        if self.status_code == 401:
            return "authentication_error"
        if self.status_code == 403:
            return "permission_error"
        return "invalid_request_error" if self.status_code < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)

    def sse(self) -> str:
        """The error as a stream's last event: the client raises it as an APIError."""
        return f"data: {json.dumps(self.body(), ensure_ascii=False)}\n\n"


def bad_request(message: str, param: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, code, param=param)


def as_openai(exc: BaseException) -> OpenAIError:
    """Any error a route or a stream meets, in OpenAI's terms."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, MedvoiceError):
        return OpenAIError.from_typed(exc)
    return OpenAIError(500, f"internal error ({type(exc).__name__})", "internal_error")


_HTTP_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    413: "input_too_large",
    415: "unsupported_media_type",
}


class OpenAIRoute(APIRoute):
    """Every error raised while handling a route — the auth dependency's HTTPException, a request-validation
    error, a typed MedvoiceError — leaves in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except MedvoiceError as exc:
                return OpenAIError.from_typed(exc).response()
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p != "body"]
                message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
                return bad_request(message, ".".join(loc) or "body").response()
            except HTTPException as exc:
                detail = exc.detail
                message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
                code = (detail.get("code") if isinstance(detail, dict) else None) or _HTTP_CODES.get(
                    exc.status_code, "http_" + str(exc.status_code)
                )
                return OpenAIError(exc.status_code, message, code, headers=exc.headers).response()

        return handle


# app/task_client.py sends a task and maps what goes wrong to a typed error (503 broker_unavailable,
# 504 worker_timeout, 502 worker_failed, or the task's own); OpenAIRoute answers it in OpenAI's shape.
def task_timeout(settings: Settings) -> float:
    """How long a route waits for its task: the task's own hard time limit (a queued task expires then too)."""
    return float(settings.task_time_limit_s)


def failure(exc: BaseException) -> dict[str, Any]:
    """A failed call's status and error code, for its log line and audit record."""
    err = as_openai(exc)
    return {"status": err.status_code, "error": err.code}


def audit_call(db: Session, user: User, action: str, record_type: str, record_id: str, detail: dict[str, Any]) -> None:
    """One audit event for one call (ids, counts, codes: never the text)."""
    audit(db, user, action, record_type, record_id, **detail)
    db.commit()
