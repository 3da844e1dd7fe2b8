"""Task input validation: bad input fails fast with a typed error, before any model is touched."""

from __future__ import annotations

import pytest

from workers.core import errors
from workers.tasks.asr import transcribe
from workers.tasks.embed import embed
from workers.tasks.llm import build_prompt, generate
from workers.tasks.tts import synthesize


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"question": "q", "history": "x"}, errors.InputError),
        ({"question": "  "}, errors.EmptyInput),
        ({"messages": [{"role": "bob", "content": "x"}]}, errors.InputError),
        ({"messages": [{"role": "system", "content": "only a system message"}]}, errors.EmptyInput),
        ({"messages": "hello"}, errors.InputError),
        ({"question": "q", "context": "not a list"}, errors.InputError),
        ({"question": "q" * 60_000}, errors.InputTooLarge),
    ],
)
def test_llm_prompt_validation(kwargs: dict, exc: type[errors.MedvoiceError]) -> None:
    with pytest.raises(exc):
        build_prompt(**kwargs)


def test_llm_prompt_shapes() -> None:
    msgs = build_prompt(messages=[{"role": "user", "content": "hi"}])
    assert msgs[0]["role"] == "system" and len(msgs) == 2  # the fixed system prompt (cached prefix) first
    zh = build_prompt(
        question="成人发烧怎么办？",
        context=["[passage]"],
        history=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
    )
    assert [m["role"] for m in zh] == ["system", "user", "assistant", "user"]
    assert "[1] [passage]" in zh[-1]["content"] and zh[-1]["content"].endswith("请用中文回答。")
    assert build_prompt(question="What now?")[-1]["content"].endswith("Answer in English.")


def test_tasks_reject_bad_input_before_loading_a_model() -> None:
    with pytest.raises(errors.InputError):
        generate("bad turn id!", question="q")
    with pytest.raises(errors.InputError):
        generate("t1", question="q", max_tokens=0)
    with pytest.raises(errors.EmptyInput):
        synthesize("")
    with pytest.raises(errors.InputTooLarge):
        synthesize("x" * 10_000)
    with pytest.raises(errors.InputError):
        synthesize("hello", speed=100)
    with pytest.raises(errors.InvalidReference):
        transcribe("../../etc/passwd")
    with pytest.raises(errors.InputError):
        transcribe("audio/x.wav", language="not-a-language-code")
    with pytest.raises(errors.EmptyInput):
        embed(["ok", ""])
    with pytest.raises(errors.InputError):
        embed([1, 2])
    with pytest.raises(errors.InputTooLarge):
        embed(["x"] * 10_000)
