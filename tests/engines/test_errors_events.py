"""Typed errors survive Celery's JSON result backend; per-turn streams and cancel flags on real Redis;
file references stay inside the data directory."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from workers.core import errors, events
from workers.core.event_schema import Done, Sentence
from workers.core.refs import resolve_ref, to_ref
from workers.core.settings import Settings


@pytest.mark.parametrize(
    "cls",
    [
        errors.AudioUnreadable,
        errors.EmptyInput,
        errors.InputTooLarge,
        errors.AudioTooLong,
        errors.InvalidReference,
        errors.ModelHashMismatch,
        errors.TurnCancelled,
    ],
)
def test_typed_error_round_trips_through_the_json_backend(cls: type[errors.MedvoiceError]) -> None:
    from workers.celery_app import celery_app

    backend = celery_app.backend
    exc = cls("bad thing", {"ref": "audio/x.wav", "n": 3})
    stored = backend.prepare_exception(exc, serializer="json")
    wire = json.loads(json.dumps(stored))  # what Redis holds
    back = backend.exception_to_python(wire)
    assert type(back) is cls
    assert back.code == cls.code and back.http_status == cls.http_status
    assert back.details == {"ref": "audio/x.wav", "n": 3} and str(back) == "bad thing"
    payload = errors.to_payload(back)
    assert payload["code"] == cls.code and 400 <= payload["http_status"] < 600


def test_http_hints_and_codes_are_stable_and_unique() -> None:
    assert errors.AudioUnreadable.http_status == 422 and errors.AudioUnreadable.code == "audio_unreadable"
    assert errors.InputTooLarge.http_status == 413 and errors.InputNotFound.http_status == 404
    assert all(
        issubclass(c, errors.InputError) == (400 <= c.http_status < 500)
        for c in errors.ERRORS_BY_CODE.values()
        if c is not errors.TurnCancelled
    )
    assert len(errors.ERRORS_BY_CODE) == len(errors.ERRORS_BY_NAME)


def test_from_exception_maps_a_lookalike_by_name() -> None:
    lookalike = type("AudioUnreadable", (Exception,), {})("corrupt", {"error": "x"})
    mapped = errors.from_exception(lookalike)
    assert isinstance(mapped, errors.AudioUnreadable) and mapped.details == {"error": "x"}
    assert errors.from_exception(ValueError("boom")).code == "engine_failure"


def test_turn_stream_append_read_and_cancel(redis_url: str) -> None:
    r = events.client(redis_url)
    turn = f"t-{uuid.uuid4().hex[:8]}"
    assert events.read(turn, r=r) == []
    first = events.emit(turn, Sentence(index=0, text="你好。"), r=r)
    events.emit(turn, Sentence(index=1, text="Second."), r=r)
    got = events.read(turn, r=r)
    assert [e for _, e in got] == [
        {"type": "sentence", "index": 0, "text": "你好。"},
        {"type": "sentence", "index": 1, "text": "Second."},
    ]
    assert [e["index"] for _, e in events.read(turn, after=first, r=r)] == [1]
    assert 0 < r.ttl(events.stream_key(turn)) <= events.DEFAULT_TTL_S
    check = events.CancelCheck(turn, interval_s=0.0, r=r)
    assert not check() and not events.is_cancelled(turn, r=r)
    events.cancel(turn, r=r)
    assert check() and events.is_cancelled(turn, r=r)
    events.clear(turn, r=r)
    assert events.read(turn, r=r) == [] and not events.is_cancelled(turn, r=r)


def test_a_blocking_read_outlasts_the_socket_timeout(redis_url: str) -> None:
    """redis-py times a socket out after 5 s; a longer XREAD BLOCK must still wait, and see what comes."""
    r = events.client(redis_url)
    turn = f"t-{uuid.uuid4().hex[:8]}"
    later = threading.Timer(5.5, lambda: events.emit(turn, Done(), r=events.client(redis_url)))
    later.start()
    t0 = time.monotonic()
    try:
        got = events.read(turn, block_ms=9000, r=r)
    finally:
        later.cancel()
    assert [e["type"] for _, e in got] == ["done"] and 5.4 < time.monotonic() - t0 < 8.5
    t0 = time.monotonic()
    assert events.read(turn, after=got[0][0], block_ms=300, r=r) == [] and time.monotonic() - t0 < 2


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x" * 200, "k\x00"])
def test_turn_ids_are_checked(bad: str) -> None:
    with pytest.raises(errors.InputError):
        events.stream_key(bad)


def test_references_stay_inside_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    audio = s.data_dir / "audio" / "a.wav"
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"x" * 100)
    (tmp_path / "outside.wav").write_bytes(b"x")
    assert resolve_ref(s, "audio/a.wav") == audio.resolve()
    assert resolve_ref(s, str(audio)) == audio.resolve()
    assert to_ref(s, audio) == "audio/a.wav"
    with pytest.raises(errors.InvalidReference):
        resolve_ref(s, "../outside.wav")
    with pytest.raises(errors.InvalidReference):
        resolve_ref(s, str(tmp_path / "outside.wav"))
    with pytest.raises(errors.InvalidReference):
        resolve_ref(s, "audio")  # a directory
    with pytest.raises(errors.InputNotFound):
        resolve_ref(s, "audio/missing.wav")
    with pytest.raises(errors.InputTooLarge):
        resolve_ref(s, "audio/a.wav", max_bytes=10)
