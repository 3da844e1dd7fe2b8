"""One log line per event, as text or JSON, each carrying the ids of what it belongs to.

The ids live in a contextvar, so they follow a request through `await`s and worker threads (Starlette copies
the context into its threadpool) and never leak from one task or request into the next:

    with logs.bind(turn_id=turn.id):
        log.info("stage done")            # ... turn_id=<id> cid=<id>

`cid` (the correlation id) is the most specific id bound: the HTTP request id, else the live session id,
else the turn id, else the Celery task id; "-" for a process's own lines (start-up, shutdown). The API
(`medvoice serve`) and the workers (`medvoice worker`, Celery's own loggers too) install the same handler:
`configure()` or `dict_config()`. Stdlib only: the API imports this module too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

IDS = ("request_id", "session_id", "turn_id", "task_id")
_ids: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("medvoice_log_ids", default={})  # noqa: B039 - never mutated: bind() sets a new mapping

# A single-use ticket in a query string (an EventSource's URL) is a credential until it is used: never logged.
_SECRET_QUERY = re.compile(r"((?:ticket|token|access_token)=)[^&\s\"']+")


def current() -> dict[str, str]:
    return dict(_ids.get())


def bind_token(**ids: str | None) -> contextvars.Token:
    """Add ids to the current context (None values are skipped); give the token to `unbind` to undo."""
    return _ids.set({**_ids.get(), **{k: str(v) for k, v in ids.items() if v}})


def unbind(token: contextvars.Token) -> None:
    try:
        _ids.reset(token)
    except ValueError:  # made in another context (a signal sent from elsewhere): start that context clean
        _ids.set({})


@contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    token = bind_token(**ids)
    try:
        yield
    finally:
        unbind(token)


def correlation_id(ids: Mapping[str, str]) -> str:
    return next((ids[k] for k in IDS if ids.get(k)), "-")


class CorrelationFilter(logging.Filter):
    """Puts the bound ids on every record that reaches the handler (`record.ids`, `record.cid`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current()
        # Celery's parent process logs "Task x[id] received" outside any task: the id is in its arguments.
        if "task_id" not in ids and record.name.startswith("celery") and isinstance(record.args, Mapping):
            task_id = record.args.get("id")
            if isinstance(task_id, str):
                ids["task_id"] = task_id
        record.ids = ids
        record.cid = correlation_id(ids)
        return True


def _message(record: logging.LogRecord) -> str:
    return _SECRET_QUERY.sub(r"\1<redacted>", record.getMessage())


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> [<cid>] <message> key=value ...`, a traceback folded onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        ids = getattr(record, "ids", {})
        extra = "".join(f" {k}={ids[k]}" for k in IDS if ids.get(k))
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name} [{getattr(record, 'cid', '-')}] "
            f"{_message(record)}{extra}"
        )
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info)
        elif record.stack_info:
            line += " | " + self.formatStack(record.stack_info)
        return line.replace("\r", "").replace("\n", " \\n ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, cid, the bound ids, process, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
            "cid": getattr(record, "cid", "-"),
            **getattr(record, "ids", {}),
            "process": record.processName,
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


def make_handler(fmt: str = "text", stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(FORMATTERS[fmt]())
    return handler


def configure(level: str | int = "INFO", fmt: str = "text") -> None:
    """The root logger writes through one handler of ours; every other logger propagates to it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(make_handler(fmt))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # a library's warning becomes one log line too, not raw text on stderr
    for name in ("celery", "celery.task", "celery.redirected", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def dict_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """The same set-up as a logging.config dict: what uvicorn applies in each of its worker processes."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"correlation": {"()": CorrelationFilter}},
        "formatters": {"medvoice": {"()": FORMATTERS[fmt]}},
        "handlers": {
            "medvoice": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["correlation"],
                "formatter": "medvoice",
            }
        },
        "root": {"handlers": ["medvoice"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level.upper()}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
