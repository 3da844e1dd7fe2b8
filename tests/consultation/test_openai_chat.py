"""Grounded chat completions and the model list, driven by the official `openai` clients (sync and async) against
a real uvicorn server and a real worker (the rag pool's knowledge base, the llm pool's answer checks): answers
with their [n] marks and citations, plain and streamed sentence by sentence, the no-answer reply, history, the
record each call leaves (a chat turn in SQL, its audit events), and errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest

from tests.consultation.openai_server import async_client, key, serve, sync_client
from workers.core.settings import Settings

openai = pytest.importorskip("openai")

DOSE = "What is the dose of amoxicillin for acute otitis media in adults?"
MISSING = "What is the dose of metformin for type 2 diabetes?"


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="module")
def api_key(tokens) -> str:
    return key(tokens)


@pytest.fixture(scope="module")
def client(base_url: str, api_key: str):
    with sync_client(base_url, api_key) as c:
        yield c


def _ask(client, question: str, history: list[dict] | None = None, **extra):
    messages = [*(history or []), {"role": "user", "content": question}]
    return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **extra)


def _turn(settings: Settings, turn_id: str):
    from sqlalchemy.orm import selectinload

    from workers.core.db import session_scope
    from workers.core.records import Turn

    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id, options=[selectinload(Turn.citations), selectinload(Turn.consultation)])
        db.expunge_all()
        return turn


# ---- refused before any worker is involved ---------------------------------------------------------------
def test_a_bad_key_is_401_for_chat_and_models(base_url: str) -> None:
    import httpx

    r = httpx.post(f"{base_url}/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.json()["error"]["type"] == "authentication_error"
    with openai.OpenAI(base_url=base_url, api_key="not-a-jwt", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            _ask(bad, DOSE)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        ({"model": "gpt-9", "messages": [{"role": "user", "content": DOSE}]}, "model"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "assistant", "content": "Hello."}]}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": DOSE}]}, "messages[0].role"),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}
                ],
            },
            "messages[0].content",
        ),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": DOSE}], "n": 2}, "n"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2001}]}, "messages"),
    ],
)
def test_bad_chat_requests_are_400_in_openai_shape(client, request_: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**request_)
    assert info.value.param == param and info.value.message and info.value.type == "invalid_request_error"


def test_malformed_chat_json_is_400(base_url: str, tokens) -> None:
    import httpx

    r = httpx.post(
        f"{base_url}/chat/completions",
        content=b'{"model": "gpt-4o-mini", "messages": ',
        headers={**tokens["ann"], "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["message"]


# ---- models -----------------------------------------------------------------------------------------------
def test_models_lists_what_is_served_under_our_names_and_openais(pipeline_worker, client) -> None:
    listed = {m.id: m for m in client.models.list()}
    for name in ("medvoice-asr", "whisper-1", "gpt-4o-mini-transcribe", "medvoice-tts", "tts-1", "gpt-4o-mini"):
        assert name in listed, sorted(listed)
    assert listed["medvoice-chat"].model_extra["role"] == "chat"
    assert listed["medvoice-embed"].model_extra["role"] == "embed"
    assert all(m.object == "model" and m.owned_by == "medvoice" for m in listed.values())
    whisper = client.models.retrieve("whisper-1")
    assert whisper.id == "whisper-1" and whisper.model_extra["alias_of"] == "medvoice-asr"
    voices = {v["id"] for v in client.models.retrieve("tts-1").model_extra["voices"]}
    assert {"alloy", "default"} <= voices
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-5-turbo-max")
    assert info.value.code == "model_not_found"


# ---- answers ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dose_answer(knowledge, client):
    return _ask(client, DOSE, metadata={"conversation_id": "dose-plain"})


def test_a_plain_answer_quotes_the_passage_with_its_mark_and_citations(dose_answer, settings: Settings) -> None:
    from openai.types.chat import ChatCompletion

    assert isinstance(dose_answer, ChatCompletion)
    choice = dose_answer.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content
    assert "500 mg" in content and "[1]" in content, content
    assert content.endswith(settings.consult_disclaimer_en)  # the disclaimer comes with every answer
    citations = choice.message.model_extra["citations"]
    cited = [c for c in citations if c["cited"]]
    assert cited and cited[0]["n"] == 1 and cited[0]["title"] == "Otitis media in adults"
    assert cited[0]["source"] == "formulary" and cited[0]["document_id"] and cited[0]["score"] > 0
    assert choice.message.model_extra["disclaimer"] == settings.consult_disclaimer_en
    assert dose_answer.model == "gpt-4o-mini" and dose_answer.usage is not None


def test_a_chat_turn_is_recorded_without_audio_and_audited(dose_answer, settings: Settings) -> None:
    from sqlalchemy import select

    from workers.core.db import session_scope
    from workers.core.records import AuditEvent

    turn_id = dose_answer.model_extra["turn_id"]
    turn = _turn(settings, turn_id)
    assert turn.input_kind == "chat" and turn.status.value == "done"
    assert turn.audio_ref is None and turn.reply_audio_ref is None and "tts" not in turn.timings
    assert turn.question_text == DOSE and turn.answer and "[1]" in turn.answer
    assert [c.n for c in turn.citations][:1] == [1]
    assert turn.verdicts["mode"] == "extractive" and turn.disclaimer == settings.consult_disclaimer_en
    assert (
        turn.consultation.title.startswith("chat:")
        and turn.consultation_id == dose_answer.model_extra["consultation_id"]
    )
    assert not (settings.audio_dir / "tts" / turn_id).exists()  # nothing was spoken
    with session_scope(settings.resolved_database_url) as db:
        rows = db.scalars(select(AuditEvent).where(AuditEvent.record_id.in_([turn_id, turn.consultation_id]))).all()
        actions = {(e.action, e.record_type) for e in rows}
        chat = [e.detail for e in rows if e.action == "openai.chat"]
        dumped = json.dumps([e.detail for e in rows]).lower()
    assert {("turn.create", "turn"), ("openai.chat", "turn"), ("consultation.create", "consultation")} <= actions
    assert chat[0]["status"] == 200 and chat[0]["mode"] == "extractive" and chat[0]["model"] == "gpt-4o-mini"
    assert "amoxicillin" not in dumped and "otitis" not in dumped  # ids and counts, never the text


def test_a_streamed_answer_comes_sentence_by_sentence_and_joins_into_the_plain_one(
    dose_answer, base_url: str, api_key: str
) -> None:
    async def run() -> list:
        async with async_client(base_url, api_key) as c:
            stream = await c.chat.completions.create(
                model="medvoice-chat",
                messages=[{"role": "user", "content": DOSE}],
                stream=True,
                metadata={"conversation_id": "dose-streamed"},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # at least one sentence, then the disclaimer
    assert "".join(pieces) == dose_answer.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert [c["n"] for c in last.model_extra["citations"] if c["cited"]] == [
        c["n"] for c in dose_answer.choices[0].message.model_extra["citations"] if c["cited"]
    ]


def test_a_question_the_knowledge_base_does_not_cover_gets_the_no_answer_reply(knowledge, client) -> None:
    out = _ask(client, MISSING)
    content = out.choices[0].message.content
    assert re.match(r"The knowledge base has nothing on [^.]*metformin", content), content
    assert not re.search(r"\[\d+\]", content) and "mg" not in content
    assert out.choices[0].message.model_extra["citations"] == []


def test_a_streamed_no_answer_from_the_sync_client(knowledge, client) -> None:
    chunks = list(_ask(client, MISSING, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The knowledge base has nothing on")
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # the usage chunk, as OpenAI sends it


def test_a_conversation_is_one_consultation_and_its_earlier_messages_are_history(
    knowledge, client, settings: Settings
) -> None:
    first = _ask(client, DOSE)
    history = [
        {"role": "system", "content": "You are a pirate."},  # not followed: the clinic's prompt decides
        {"role": "user", "content": DOSE},
        {"role": "assistant", "content": first.choices[0].message.content},
    ]
    second = _ask(client, "What do patients allergic to penicillin receive instead?", history)
    assert "azithromycin" in second.choices[0].message.content.lower(), second.choices[0].message.content
    one, two = _turn(settings, first.model_extra["turn_id"]), _turn(settings, second.model_extra["turn_id"])
    assert one.consultation_id == two.consultation_id and (one.index, two.index) == (1, 2)
    # A new conversation (another first question) is another consultation.
    other = _ask(client, MISSING + " Please.")
    assert _turn(settings, other.model_extra["turn_id"]).consultation_id != one.consultation_id


def test_a_chinese_question_is_answered_with_the_chinese_disclaimer(knowledge, client, settings: Settings) -> None:
    out = _ask(client, "成人急性中耳炎用阿莫西林的剂量是多少？")
    content = out.choices[0].message.content
    assert content.endswith(settings.consult_disclaimer_zh), content
    assert "500 mg" in content or "知识库" in content, content  # quoted from the English page, or refused
