"""One line per event, text or JSON, with the correlation id of the request, turn, session or task it
belongs to; credentials in query strings never written."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from workers.core import logs


@pytest.fixture
def captured():
    """Our handler on the root logger, writing into a buffer (as `medvoice serve` / `worker` install it)."""
    streams = {}

    def attach(fmt: str) -> io.StringIO:
        buf = io.StringIO()
        handler = logs.make_handler(fmt, buf)
        root = logging.getLogger()
        root.addHandler(handler)
        streams[buf] = handler
        return buf

    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    yield attach
    for handler in streams.values():
        logging.getLogger().removeHandler(handler)
    logging.getLogger().setLevel(old_level)


def test_text_lines_carry_the_bound_ids_and_stay_one_line(captured):
    buf = captured("text")
    log = logging.getLogger("medvoice.test")
    log.info("outside")
    with logs.bind(turn_id="t-1", task_id="k-9"):
        log.info("inside")
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            log.exception("failed")
    log.info("after")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4  # the traceback is folded onto its line
    assert "[-] outside" in lines[0]
    assert "[t-1] inside turn_id=t-1 task_id=k-9" in lines[1]
    assert "Traceback" in lines[2] and "RuntimeError" in lines[2]
    assert "[-] after" in lines[3] and "turn_id" not in lines[3]


def test_json_lines_parse_and_name_the_most_specific_id(captured):
    buf = captured("json")
    log = logging.getLogger("medvoice.test")
    with logs.bind(session_id="s-1"), logs.bind(turn_id="t-2"):
        log.info("spoken")
    with logs.bind(request_id="r-3", turn_id="t-4"):
        log.warning("request")
    first, second = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["cid"] == "s-1" and first["turn_id"] == "t-2" and first["msg"] == "spoken"
    assert second["cid"] == "r-3" and second["level"] == "WARNING" and second["logger"] == "medvoice.test"
    assert {"ts", "pid", "process"} <= set(first)


def test_ids_do_not_leak_between_threads(captured):
    buf = captured("json")
    log = logging.getLogger("medvoice.test")
    barrier = threading.Barrier(2)

    def work(turn: str) -> None:
        with logs.bind(turn_id=turn):
            barrier.wait()
            log.info("work of %s", turn)

    threads = [threading.Thread(target=work, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = {json.loads(line)["msg"]: json.loads(line)["cid"] for line in buf.getvalue().splitlines()}
    assert got == {"work of a": "a", "work of b": "b"}


def test_tickets_in_query_strings_are_redacted():
    # Through our handler directly: uvicorn's access logger is reconfigured by any in-process server a test ran.
    buf = io.StringIO()
    handler = logs.make_handler("text", buf)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1", "GET", "/v1/turns/x/events?ticket=mvt_secret&after=0-0", "1.1", 200),
        None,
    )
    handler.handle(record)
    line = buf.getvalue()
    assert "mvt_secret" not in line and "ticket=<redacted>&after=0-0" in line


def test_celery_received_lines_get_the_task_id_from_their_arguments(captured):
    buf = captured("json")
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", {"name": "rag.turn", "id": "abc"}
    )
    assert json.loads(buf.getvalue())["task_id"] == "abc"


def test_a_request_id_reaches_lines_logged_in_the_threadpool(client, captured):
    """A sync route runs in Starlette's threadpool: its lines still carry the request's id."""
    buf = captured("json")
    r = client.post(
        "/v1/auth/token", data={"username": "nobody-here", "password": "x"}, headers={"X-Request-ID": "req-42"}
    )
    assert r.status_code == 401
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    failed = [line for line in lines if line["msg"] == "sign-in failed"]
    assert failed and failed[0]["request_id"] == "req-42" and failed[0]["cid"] == "req-42"


def test_dict_config_is_what_uvicorn_applies():
    import logging.config

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(logs.dict_config("INFO", "json"))
    try:
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        assert any(isinstance(f, logs.CorrelationFilter) for f in handler.filters)
        assert logging.getLogger("uvicorn.access").propagate
    finally:
        root.handlers, level = saved
        root.setLevel(level)
