"""Typed task errors: a stable `code` and an HTTP status hint, serialisable through Celery's JSON backend.

Celery's JSON result backend stores a failed task's exception as {exc_type, exc_module, exc_message}
(exc_message = `exc.args`) and rebuilds it with `cls(*args)` when the module is importable by the
reader. Every error here therefore keeps `args == (message, details)` and takes exactly those
constructor arguments, so `AsyncResult.get()` in the API process re-raises the same class with the
same code and details. Where the class cannot be rebuilt (an older reader, another language),
`from_exception` maps by class name, and `to_payload` gives the wire shape for an API response.

This module is light (stdlib only): the API process imports it to map errors to responses.
"""

from __future__ import annotations

from typing import Any


class MedvoiceError(Exception):
    """Base of every typed error a task may raise on purpose."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        details = dict(details or {})
        super().__init__(message, details)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message or self.code

    def __reduce__(self):  # noqa: ANN204 - pickling for the prefork pool and non-JSON backends
        return (type(self), (self.message, self.details))

    def to_payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "http_status": self.http_status, "details": self.details}


# ---- bad input: the caller can fix it (4xx) -------------------------------------------------------
class InputError(MedvoiceError):
    code = "bad_input"
    http_status = 400


class InvalidReference(InputError):
    """A file reference that is not a relative path inside the data directory."""

    code = "invalid_reference"
    http_status = 400


class InputNotFound(InputError):
    code = "input_not_found"
    http_status = 404


class EmptyInput(InputError):
    code = "empty_input"
    http_status = 422


class InputTooLarge(InputError):
    code = "input_too_large"
    http_status = 413


class AudioUnreadable(InputError):
    """Corrupt audio, or a format nothing here can decode."""

    code = "audio_unreadable"
    http_status = 422


class AudioTooLong(InputTooLarge):
    code = "audio_too_long"
    http_status = 413


class UnknownVoice(InputError):
    """A voice id this tts pool does not have."""

    code = "unknown_voice"
    http_status = 400


class NoVoiceForLanguage(InputError):
    """No voice here speaks the text's language: the text stays text, never read by a voice that cannot."""

    code = "no_voice_for_language"
    http_status = 422


class TurnCancelled(MedvoiceError):
    """The turn's cancel flag was set (client stop or barge-in) before this stage did its work."""

    code = "turn_cancelled"
    http_status = 409


# ---- the deployment's fault: an operator must fix it (5xx) ----------------------------------------
class ModelError(MedvoiceError):
    code = "model_error"
    http_status = 503


class ModelFileMissing(ModelError):
    code = "model_file_missing"
    http_status = 503


class ModelHashMismatch(ModelError):
    code = "model_hash_mismatch"
    http_status = 503


class EngineUnavailable(ModelError):
    """The engine's library is not installed or failed to load."""

    code = "engine_unavailable"
    http_status = 503


class EngineFailure(MedvoiceError):
    code = "engine_failure"
    http_status = 500


# ---- reaching a worker: raised by the caller of a task (app/task_client.py), not by the task (5xx) -----
class BrokerUnavailable(MedvoiceError):
    """The queue (or its result store) could not be reached: the task was not sent, or its reply was lost."""

    code = "broker_unavailable"
    http_status = 503


class KnowledgeBaseUnavailable(MedvoiceError):
    """The knowledge base's store (a Chroma server) is not answering: retrieval cannot run now."""

    code = "kb_unavailable"
    http_status = 503


class WorkerTimeout(MedvoiceError):
    """No reply within the caller's wait (no worker of the pool took it, or it ran too long)."""

    code = "worker_timeout"
    http_status = 504


class WorkerFailed(MedvoiceError):
    """The task failed with an error that is not one of ours: a bug or crash on the worker's side."""

    code = "worker_failed"
    http_status = 502


def _all_subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_NAME: dict[str, type[MedvoiceError]] = {c.__name__: c for c in _all_subclasses(MedvoiceError)}
ERRORS_BY_CODE: dict[str, type[MedvoiceError]] = {c.code: c for c in _all_subclasses(MedvoiceError)}


def from_exception(exc: BaseException) -> MedvoiceError:
    """The typed error behind `exc`, also when Celery rebuilt it as a look-alike class of the same name."""
    if isinstance(exc, MedvoiceError):
        return exc
    cls = ERRORS_BY_NAME.get(type(exc).__name__)
    if cls is None:
        return EngineFailure(f"{type(exc).__name__}", {"type": type(exc).__name__})
    args = exc.args
    message = str(args[0]) if args else ""
    details = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
    return cls(message, details)


def to_payload(exc: BaseException) -> dict[str, Any]:
    return from_exception(exc).to_payload()
