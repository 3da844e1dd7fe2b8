"""A prompt's system prompt, history and context evaluated before its question (the live path's speculative
prefill), on the real GGUF model (skipped without its weights): reused only when the prefix is exactly the
final prompt's, thrown away otherwise, and the answer is the one the model gives without any prefill (greedy,
seeded). Also the KV cache moved to a process that did not evaluate it (export_kv/import_kv)."""

from __future__ import annotations

import pytest

from workers import modelfiles
from workers.core import errors
from workers.core.settings import Settings
from workers.engines.llm import LlmEngine, build_messages

OTITIS = [
    "Acute otitis media, children: amoxicillin 40 mg/kg/day in two doses for 5 days is first line.",
    "Penicillin allergy: clarithromycin 15 mg/kg/day in two doses for 5 days.",
]
PNEUMONIA = [
    "Community-acquired pneumonia, low severity: amoxicillin 500 mg three times a day for 5 days.",
    "Penicillin allergy: doxycycline 200 mg on day 1, then 100 mg once a day.",
]
QUESTION = "What should I give a child with an ear infection who is allergic to penicillin?"


@pytest.fixture(scope="module")
def engine() -> LlmEngine:
    s = Settings()
    try:
        path = modelfiles.resolve_llm(s)
    except errors.ModelError as exc:
        pytest.skip(f"LLM weights not prepared ({exc}); run `medvoice models prepare` (make test does)")
    return LlmEngine(s, path)


def _chat(engine: LlmEngine, context: list[str], question: str) -> list[dict[str, str]]:
    return build_messages(engine.settings.llm_system_prompt, question, context, None, "en")


def _answer(engine: LlmEngine, context: list[str]) -> dict:
    return engine.generate(_chat(engine, context, QUESTION), max_tokens=32, temperature=0.0)


def test_a_prefill_of_other_passages_is_thrown_away_and_the_answer_is_unchanged(engine: LlmEngine) -> None:
    engine.llm.reset()
    cold = _answer(engine, OTITIS)
    final_prefix = engine.question_prefix(_chat(engine, OTITIS, QUESTION))
    assert len(final_prefix) > 40
    # Spoken so far: the start of a question that retrieval matched to other passages.
    stale = engine.question_prefix(_chat(engine, PNEUMONIA, "What should I give"))
    assert stale != final_prefix[: len(stale)]
    assert engine.prefill(stale)["evaluated"] > 0
    after = _answer(engine, OTITIS)
    assert after["text"] == cold["text"]
    assert after["timings"]["cached_tokens"] < len(final_prefix)  # only the system prompt was common


def test_a_prefill_of_the_same_passages_is_reused_and_the_answer_is_unchanged(engine: LlmEngine) -> None:
    engine.llm.reset()
    cold = _answer(engine, OTITIS)
    # A partial transcript retrieves the same passages: its prefix is the final prompt's, whatever the question.
    prefix = engine.question_prefix(_chat(engine, OTITIS, "What should I give a child"))
    assert prefix == engine.question_prefix(_chat(engine, OTITIS, QUESTION))
    engine.prefill(engine.question_prefix(_chat(engine, PNEUMONIA, "x")))  # the cache held something else
    filled = engine.prefill(prefix)
    assert filled["evaluated"] > 0 and engine.prefill(prefix)["evaluated"] == 0  # a second prefill is free
    warm = _answer(engine, OTITIS)
    assert warm["timings"]["cached_tokens"] >= len(prefix)
    assert warm["text"] == cold["text"]


def test_the_prefilled_cache_moves_to_a_process_that_did_not_evaluate_it(engine: LlmEngine) -> None:
    engine.llm.reset()
    cold = _answer(engine, OTITIS)
    prefix = engine.question_prefix(_chat(engine, OTITIS, QUESTION))
    engine.prefill(prefix)
    data = engine.export_kv(prefix)
    assert data and len(data) > 1000 * len(prefix) // 10
    engine.generate(_chat(engine, PNEUMONIA, "Which antibiotic for pneumonia?"), max_tokens=8, temperature=0.0)
    assert engine.held(prefix) < len(prefix)  # another turn used the cache meanwhile
    assert engine.import_kv(prefix, data) and engine.held(prefix) == len(prefix)
    moved = _answer(engine, OTITIS)
    assert moved["timings"]["cached_tokens"] >= len(prefix)
    assert moved["text"] == cold["text"]
    assert engine.export_kv([1, 2, 3]) is None  # not what the cache holds: nothing to move
