"""workers/core/event_schema.py: each event type's fields are defined once; what producers build is what consumers
read back, and the stream's wire format (type + JSON data) is unchanged."""

from __future__ import annotations

import pytest

from workers.core import event_schema as es
from workers.core.errors import InputError
from workers.pipeline.contracts import Answered, Retrieved, TurnRef


def test_every_type_has_one_model_and_round_trips():
    samples = [
        es.Status(status="retrieving"),
        es.Restart(stage="llm"),
        es.Sentence(index=0, text="Give 300 mg [1]."),
        es.Transcribed(
            language="en",
            text="Hi.",
            duration_s=1.5,
            timings={"rtf": 0.2},
            segments=[es.Segment(start=0.0, end=1.5, text="Hi.")],
        ),
        es.Retrieved(
            count=1,
            nothing_relevant=False,
            citations=[es.RetrievedCitation(n=1, title="Otitis", source="kb", score=0.5)],
        ),
        es.Answered(sentences=1, guard_fired=False, mode="extractive", citations=[1]),
        es.Audio(index=0, audio_ref="audio/tts/x/0.wav", duration_s=1.0, sample_rate=22050),
        es.TextOnly(index=1, language="ru", message="no voice here speaks 'ru'"),
        es.AudioReady(audio_ref="audio/tts/x/reply.wav", duration_s=1.0),
        es.Done(timings={"wall_s": 1}),
        es.Failed(stage="rag", code="empty_input", message="no question", http_status=422),
        es.Cancelled(stage="llm", code="turn_cancelled"),
        es.Timeout(message="over"),
        es.LlmDone(sentences=1, cancelled=False, finish_reason="stop", timings={}),
        es.TranscriptSegment(index=0, start=0.0, end=1.2, text="Hi.", language="en"),
    ]
    assert {type(e) for e in samples} == set(es.MODELS.values())
    for event in samples:
        assert es.decode(event.type.value, event.data()) == event


def test_wire_format_leaves_unset_fields_out_and_keeps_the_record_marker():
    assert es.Done(source="record").data() == {"status": "done", "from": "record"}
    assert es.Failed(status="error", message="asr: empty_input", source="record").data() == {
        "message": "asr: empty_input",
        "status": "error",
        "from": "record",
    }


def test_unknown_types_and_bad_fields_decode_to_none():
    assert es.decode("llm_thinking", {"x": 1}) is None
    assert es.decode("sentence", {"index": "first"}) is None
    with pytest.raises(ValueError):
        es.Sentence(index=0, text="x", extra=1)  # a producer cannot invent a field


def test_contracts_check_the_state_they_receive():
    assert TurnRef.from_state({"turn_id": "t-1"}).to_state() == {"turn_id": "t-1"}
    state = {"turn_id": "t-1", "language": "en", "passages": [{"n": 1, "text": "x"}], "missing": ""}
    assert Retrieved.from_state(state).to_state() == state
    assert Answered.from_state({"turn_id": "t-1", "sentences": ["A."]}).clips == []
    for bad in (
        None,
        [],
        {"turn_id": "bad id!"},
        {"turn_id": "t", "passages": "x"},
        {"turn_id": "t", "sentences": [1]},
    ):
        with pytest.raises(InputError):
            (Answered if isinstance(bad, dict) and "sentences" in bad else Retrieved).from_state(bad)
