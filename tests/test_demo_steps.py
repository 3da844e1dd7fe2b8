"""The demo's client-side pieces that need no service: SSE parsing, event lines, per-document ranking."""

from __future__ import annotations

from app.cli import demo_steps as steps


def test_sse_events_parse_ids_types_and_json():
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 1-0",
        "event: status",
        'data: {"status": "transcribing"}',
        "",
        "event: done",
        'data: {"status": "done", "from": "record"}',
        "",
        "id: 2-0",
        "event: odd",
        "data: not json",
        "",
    ]
    assert list(steps.sse_events(iter(lines))) == [
        ("1-0", "status", {"status": "transcribing"}),
        (None, "done", {"status": "done", "from": "record"}),
        ("2-0", "odd", {"raw": "not json"}),
    ]


def test_describe_event_covers_the_pipeline():
    assert "sentence 1" in steps.describe_event("sentence", {"index": 0, "text": "Give [1] amoxicillin."})
    assert "[1]" in steps.describe_event("sentence", {"index": 0, "text": "Give [1] amoxicillin."})  # escaped, kept
    assert "nothing relevant" in steps.describe_event(
        "retrieved", {"count": 0, "nothing_relevant": True, "citations": []}
    )
    assert "error" in steps.describe_event("error", {"message": "asr: empty_input"})


def test_best_per_document_keeps_rank_order():
    hits = [
        {"doc_id": "a", "score": 0.9},
        {"doc_id": "a", "score": 0.8},
        {"doc_id": "b", "score": 0.5},
        {"doc_id": "c", "score": 0.4},
        {"doc_id": "b", "score": 0.3},
    ]
    assert [h["doc_id"] for h in steps.best_per_document(hits)] == ["a", "b", "c"]
