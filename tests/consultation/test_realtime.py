"""Live voice consultations over the OpenAI Realtime protocol, driven by the official `openai` client (its beta
and GA realtime connections) against a real uvicorn, real Redis and a real worker serving every pool with the
real small models: server VAD, partial and final transcripts, a cited spoken answer whose audio Whisper hears,
push-to-talk, typed questions, barge-in, cancel, and bad input, with every turn in SQL."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.conftest import wait_for
from tests.consultation.realtime_client import RATE, Collector, client, silence, stream
from workers.core.db import session_scope
from workers.core.records import AuditEvent, Turn

openai = pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")

pytestmark = pytest.mark.slow
QUESTION = "How should an adult with a middle ear infection be treated, and for how many days?"
SECOND = "Which drug is given to patients allergic to penicillin?"


@pytest.fixture(scope="module")
def key(tokens) -> str:
    return tokens["ann"]["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def pcm(speech, knowledge):
    """pcm(text) → PCM16 mono 24 kHz of the worker's Piper voice saying it."""
    cache: dict[str, bytes] = {}

    def make(text: str) -> bytes:
        if text not in cache:
            import io

            samples, rate = sf.read(io.BytesIO(speech(text)), dtype="int16")
            cache[text] = soxr.resample(samples, rate, RATE).astype("<i2").tobytes()
        return cache[text]

    return make


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def audio_of(events: list[dict]) -> np.ndarray:
    raw = b"".join(base64.b64decode(e["delta"]) for e in events)
    return np.frombuffer(raw, dtype="<i2")


def transcribe(settings, samples: np.ndarray) -> str:
    """What the worker's Whisper hears in 24 kHz reply audio."""
    from workers.celery_app import celery_app

    pcm16k = soxr.resample(samples, RATE, 16000).astype("<i2").tobytes()
    out = celery_app.send_task(
        "live.transcribe", kwargs={"pcm": base64.b64encode(pcm16k).decode(), "language": "en"}
    ).get(timeout=120)
    return out["text"]


def turn_row(settings, turn_id: str) -> Turn:
    with session_scope(settings.resolved_database_url) as db:
        turn = db.get(Turn, turn_id)
        db.expunge(turn)
        return turn


# ---- a spoken question, server VAD, the beta client -------------------------------------------------------------
def test_a_spoken_question_is_transcribed_answered_with_citations_and_spoken(live_server, key, pcm, settings) -> None:
    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await got.until("session.created")
            await conn.session.update(
                session={
                    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            )
            await got.until("session.updated")
            await stream(conn, silence(0.5) + pcm(QUESTION) + silence(1.5))
            await got.until("response.done", timeout_s=300)
            return got

    got = asyncio.run(main())
    types = [t for _, t, _ in got.events]
    assert got.of("session.created")[0]["session"]["input_audio_format"] == "pcm16"
    started, stopped = got.of("input_audio_buffer.speech_started")[0], got.of("input_audio_buffer.speech_stopped")[0]
    assert 200 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
    assert types.index("input_audio_buffer.committed") < types.index("response.created")
    item_id = stopped["item_id"]
    # Partials: append-only deltas of the utterance in progress, then the final transcript.
    deltas = [e["delta"] for e in got.of("conversation.item.input_audio_transcription.delta")]
    completed = got.of("conversation.item.input_audio_transcription.completed")[0]
    assert completed["item_id"] == item_id
    assert {"adult", "ear", "infection"} <= words(completed["transcript"])
    assert deltas, "no partial transcript while the question was spoken"
    assert all(e["item_id"] == item_id for e in got.of("conversation.item.input_audio_transcription.delta"))
    assert words("".join(deltas)) <= words(completed["transcript"]) | words(QUESTION)
    # The answer: text deltas, audio deltas, completed, cited, with the turn id.
    done = got.of("response.done")[0]["response"]
    assert done["status"] == "completed", done
    text = "".join(e["delta"] for e in got.of("response.audio_transcript.delta"))
    assert "amoxicillin" in text.lower() and "[1]" in text
    meta = done["metadata"]
    citations = json.loads(meta["citations"])
    assert citations and citations[0]["n"] == 1 and citations[0]["cited"] is True and citations[0]["title"]
    assert done["medvoice"]["turn_id"] == meta["turn_id"]
    audio = audio_of(got.of("response.audio.delta"))
    assert audio.shape[0] > RATE  # more than a second of speech
    assert types.index("response.audio.delta") < types.index("response.audio.done") < types.index("response.done")
    heard = transcribe(settings, audio)
    assert "amoxicillin" in heard.lower() or "500" in heard, heard
    # The turn is in SQL like a REST one, with what the live session adds.
    turn = turn_row(settings, meta["turn_id"])
    assert turn.status.value == "done" and turn.input_kind == "audio" and turn.audio_ref
    assert "amoxicillin" in (turn.answer or "").lower()
    assert turn.live["session_id"] and turn.live["first_audio_s"] is not None and turn.interrupted is False


def test_the_consultation_shows_live_turns_like_uploaded_ones(live_server, key, pcm, api, tokens, settings) -> None:
    async def main() -> str:
        async with client(live_server, key).realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            created = (await got.until("session.created"))[0]["session"]
            assert created["type"] == "realtime" and created["audio"]["input"]["format"]["rate"] == RATE
            await conn.session.update(
                session={
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"language": "en"}, "turn_detection": {"type": "server_vad"}}},
                }
            )
            await got.until("session.updated")
            await stream(conn, pcm(SECOND) + silence(1.2))
            done = (await got.until("response.done", timeout_s=300))[0]["response"]
            # The GA dialect's names.
            assert got.of("response.output_audio.delta") and got.of("response.output_audio_transcript.delta")
            assert got.of("conversation.item.added")
            assert not got.of("response.audio.delta")
            return done["metadata"]["turn_id"], done["metadata"]["consultation_id"]

    turn_id, cid = asyncio.run(main())
    body = api.get(f"/v1/consultations/{cid}", headers=tokens["ann"]).json()
    turn = next(t for t in body["turns"] if t["id"] == turn_id)
    assert turn["status"] == "done" and "azithromycin" in turn["answer"].lower()
    assert turn["citations"] and turn["live"]["session_id"] and turn["interrupted"] is False
    with session_scope(settings.resolved_database_url) as db:
        actions = {a.action for a in db.query(AuditEvent).filter(AuditEvent.record_id == cid)}
    assert {"live.session.open", "live.session.close", "consultation.create"} <= actions


# ---- push-to-talk and typed questions ----------------------------------------------------------------------------
def test_push_to_talk_and_a_typed_question(live_server, key, pcm, settings) -> None:
    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(
                session={
                    "turn_detection": None,
                    "input_audio_transcription": {"language": "en"},
                    "modalities": ["text"],
                }
            )
            assert (await got.until("session.updated"))[0]["session"]["turn_detection"] is None
            await stream(conn, pcm(QUESTION), pace=4.0)
            await asyncio.sleep(0.5)
            assert not got.of("input_audio_buffer.speech_started")  # no VAD in push-to-talk
            await conn.input_audio_buffer.commit()
            await got.until("response.done", timeout_s=300)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": SECOND}]}
            )
            await got.until("conversation.item.created", 3)
            await conn.response.create()
            await got.until("response.done", 2, timeout_s=300)
            return got

    got = asyncio.run(main())
    first, second = (e["response"] for e in got.of("response.done"))
    assert first["status"] == second["status"] == "completed"
    assert not got.of("response.audio.delta")  # text only was asked for
    texts = [e["text"] for e in got.of("response.text.done")]
    assert "amoxicillin" in texts[0].lower() and "azithromycin" in texts[1].lower()
    assert turn_row(settings, second["metadata"]["turn_id"]).input_kind == "text"


def test_create_response_off_waits_for_response_create(live_server, key, pcm) -> None:
    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(
                session={
                    "input_audio_transcription": {"language": "en"},
                    "turn_detection": {"type": "server_vad", "create_response": False},
                }
            )
            await stream(conn, pcm(SECOND) + silence(1.2))
            await got.until("conversation.item.input_audio_transcription.completed", timeout_s=200)
            await asyncio.sleep(1.0)
            assert not got.of("response.created")
            await conn.response.create()
            await got.until("response.done", timeout_s=300)
            return got

    got = asyncio.run(main())
    assert got.of("response.done")[0]["response"]["status"] == "completed"
    assert "azithromycin" in got.of("response.audio_transcript.done")[0]["transcript"].lower()


# ---- barge-in and cancel ------------------------------------------------------------------------------------------
def test_speaking_over_the_answer_cancels_it_and_the_new_question_is_answered(live_server, key, pcm, settings) -> None:
    async def main() -> tuple[Collector, float]:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(
                session={"input_audio_transcription": {"language": "en"}, "turn_detection": {"type": "server_vad"}}
            )
            await stream(conn, pcm(QUESTION) + silence(1.0))
            await got.until("response.audio.delta", timeout_s=300)
            await asyncio.sleep(1.0)  # the clinician hears the answer begin...
            # ...and speaks again while it is still being played.
            await stream(conn, pcm(SECOND) + silence(1.2))
            await got.until("response.done", 2, timeout_s=300)
            return got

    got = asyncio.run(main())
    first, second = (e["response"] for e in got.of("response.done"))
    assert first["status"] == "cancelled" and first["status_details"]["reason"] == "turn_detected"
    assert second["status"] == "completed"
    cancelled_at = next(t for t, ty, e in got.events if ty == "response.done" and e["response"]["id"] == first["id"])
    late = [
        t
        for t, ty, e in got.events
        if ty == "response.audio.delta" and e["response_id"] == first["id"] and t > cancelled_at
    ]
    assert not late, "audio of the cancelled answer arrived after response.done"
    assert "azithromycin" in got.of("response.audio_transcript.done")[-1]["transcript"].lower()
    turn = turn_row(settings, first["metadata"]["turn_id"])
    assert turn.interrupted is True and turn.live["reason"] == "turn_detected"
    assert turn.live["heard_s"] <= turn.live["sent_audio_s"]


def test_response_cancel_stops_the_answer(live_server, key, pcm, settings) -> None:
    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(session={"input_audio_transcription": {"language": "en"}})
            await stream(conn, pcm(QUESTION) + silence(1.0))
            await got.until("response.created", timeout_s=300)
            await conn.response.cancel()
            await got.until("response.done", timeout_s=120)
            await conn.response.cancel()  # nothing left to cancel: an error event, the session goes on
            await got.until("error")
            return got

    got = asyncio.run(main())
    done = got.of("response.done")[0]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert got.of("error")[0]["error"]["code"] == "response_cancel_not_active"
    assert turn_row(settings, done["metadata"]["turn_id"]).interrupted is True


# ---- auth ---------------------------------------------------------------------------------------------------------
def _close_of(
    live_server: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None, query: str = ""
) -> tuple[int, str]:
    async def main() -> tuple[int, str]:
        async with websockets.connect(
            f"ws://{live_server}/v1/realtime{query}", additional_headers=headers or {}, subprotocols=subprotocols
        ) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed as exc:
                return exc.rcvd.code, exc.rcvd.reason
            raise AssertionError("the connection was not closed")

    return asyncio.run(main())


def test_bad_credentials_close_with_a_code_and_reason(live_server, api, tokens) -> None:
    assert _close_of(live_server)[0] == 4401
    code, reason = _close_of(live_server, {"Authorization": "Bearer nope"})
    assert code == 4401 and "token" in reason
    code, reason = _close_of(live_server, subprotocols=["realtime", "openai-insecure-api-key.mvt_forged"])
    assert code == 4401 and "ticket" in reason


def test_a_browser_ticket_works_once(live_server, api, tokens) -> None:
    r = api.post("/v1/realtime/sessions", json={"input_audio_transcription": {"language": "en"}}, headers=tokens["ann"])
    assert r.status_code == 200, r.text
    secret = r.json()["client_secret"]["value"]

    async def first() -> dict:
        async with websockets.connect(
            f"ws://{live_server}/v1/realtime",
            subprotocols=["realtime", f"openai-insecure-api-key.{secret}", "openai-beta.realtime-v1"],
        ) as ws:
            assert ws.subprotocol == "realtime"
            return json.loads(await ws.recv())

    created = asyncio.run(first())
    assert created["type"] == "session.created"
    assert created["session"]["input_audio_transcription"]["language"] == "en"
    code, reason = _close_of(live_server, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"])
    assert code == 4401 and "ticket" in reason
    assert (
        api.post("/v1/realtime/sessions", json={"input_audio_format": "g711_ulaw"}, headers=tokens["ann"]).status_code
        == 400
    )


def test_someone_elses_consultation_is_refused(live_server, api, tokens) -> None:
    cid = api.post("/v1/consultations", json={"title": "ben's"}, headers=tokens["ben"]).json()["id"]
    code, reason = _close_of(live_server, tokens["ann"], query=f"?consultation_id={cid}")
    assert code == 4404 and "not found" in reason


# ---- bad input: an error event each, the session and the others survive ------------------------------------------
def test_bad_input_gets_error_events_and_the_session_survives(live_server, key, pcm, settings) -> None:
    async def main() -> list[dict]:
        async with websockets.connect(
            f"ws://{live_server}/v1/realtime",
            additional_headers={"Authorization": f"Bearer {key}", "OpenAI-Beta": "realtime=v1"},
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            sent = [
                "not json",
                json.dumps([1, 2]),
                json.dumps({"type": "no.such.event"}),
                json.dumps({"type": "input_audio_buffer.append"}),
                json.dumps({"type": "input_audio_buffer.append", "audio": "%%%not base64%%%"}),
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
                json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}),
                json.dumps({"type": "session.update", "session": {"turn_detection": {"threshold": 7}}}),
                json.dumps({"type": "conversation.item.create", "item": {"type": "function_call"}}),
                json.dumps({"type": "input_audio_buffer.commit"}),
                json.dumps({"type": "response.create"}),
                "x" * (settings.live_max_frame_bytes + 10),
            ]
            errors = []
            for frame in sent:
                await ws.send(frame)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert reply["type"] == "error", reply
                errors.append(reply["error"])
            await ws.send(b"\x00\x01")
            errors.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["error"])
            # Still alive: a typed question is answered.
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": SECOND}],
                        },
                    }
                )
            )
            await ws.send(json.dumps({"type": "response.create"}))
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 300))
                if ev["type"] == "response.done":
                    assert ev["response"]["status"] == "completed"
                    return errors

    codes = [e["code"] for e in asyncio.run(main())]
    assert codes == [
        "invalid_json",
        "invalid_event",
        "unknown_event",
        "missing_required_parameter",
        "bad_input",
        "bad_input",
        "unsupported_audio_format",
        "invalid_value",
        "unsupported_item",
        "input_audio_buffer_commit_empty",
        "no_input",
        "frame_too_large",
        "invalid_frame",
    ]


def test_flooding_faster_than_real_time_is_refused_frame_by_frame(live_server, key) -> None:
    async def main() -> list[dict]:
        async with websockets.connect(
            f"ws://{live_server}/v1/realtime", additional_headers={"Authorization": f"Bearer {key}"}
        ) as ws:
            await ws.recv()
            second = base64.b64encode(silence(1.0)).decode()
            errors = []
            for _ in range(25):  # 25 s of audio in a moment
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second}))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if ev["type"] == "error":
                    errors.append(ev["error"])
                if ev["type"] == "input_audio_buffer.cleared":
                    return errors

    errors = asyncio.run(main())
    assert errors and all("real time" in e["message"] for e in errors)


def test_a_client_that_vanishes_mid_answer_leaves_a_finished_turn(live_server, key, pcm, settings) -> None:
    async def main() -> str:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(session={"input_audio_transcription": {"language": "en"}})
            await stream(conn, pcm(SECOND) + silence(1.0))
            created = (await got.until("response.created", timeout_s=300))[0]
            return created["response"]["metadata"]["turn_id"]

    turn_id = asyncio.run(main())  # the connection closes here, mid-answer
    wait_for(lambda: turn_row(settings, turn_id).status.value in ("done", "error"), 300, "the turn to finish")
    turn = turn_row(settings, turn_id)
    assert turn.status.value == "done" and "azithromycin" in (turn.answer or "").lower()


def test_the_command_line_live_session(live_server, key, speech, knowledge, tmp_path) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    wav = tmp_path / "question.wav"
    wav.write_bytes(speech(QUESTION))
    out = tmp_path / "reply.wav"
    result = CliRunner().invoke(
        cli,
        [
            "live",
            "--file",
            str(wav),
            "--url",
            f"http://{live_server}",
            "--token",
            key,
            "--language",
            "en",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "answer (completed)" in result.output and "amoxicillin" in result.output.lower()
    assert "[1]" in result.output and "cited" in result.output
    info = sf.info(str(out))
    assert info.samplerate == RATE and info.duration > 1.0


def test_a_transcript_only_session_does_not_repeat_an_utterance_after_a_short_pause(live_server, key, pcm) -> None:
    """With create_response off there is no reply to take back: speech resuming soon after an endpoint is the next
    item, not the previous one joined again (whose text would then be repeated)."""
    first, rest = "How should an adult with a middle ear infection be treated", "and for how many days?"

    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(
                session={
                    "input_audio_transcription": {"language": "en"},
                    "turn_detection": {"type": "server_vad", "create_response": False},
                }
            )
            await stream(conn, pcm(first) + silence(0.8) + pcm(rest) + silence(1.5))
            await got.until("conversation.item.input_audio_transcription.completed", 2, timeout_s=200)
            return got

    got = asyncio.run(main())
    done = got.of("conversation.item.input_audio_transcription.completed")
    assert len({e["item_id"] for e in done}) == 2, done
    assert "infection" in words(done[0]["transcript"]) and "days" in words(done[1]["transcript"]), done
    assert "infection" not in words(done[1]["transcript"]), done  # the first utterance is not heard twice
    assert not got.of("response.created")


def test_a_pause_mid_question_does_not_split_it(live_server, key, pcm, settings) -> None:
    """The clinician pauses (longer than the endpoint silence) before the end of the question: the reply to its
    first half is dropped before it could be heard, and the turn answers the whole question."""
    first, rest = "How should an adult with a middle ear infection be treated", "and for how many days?"

    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(
                session={"input_audio_transcription": {"language": "en"}, "turn_detection": {"type": "server_vad"}}
            )
            await stream(conn, pcm(first) + silence(0.8) + pcm(rest) + silence(1.5))
            await got.until("input_audio_buffer.committed", 2, timeout_s=120)
            while not any(e["response"]["status"] == "completed" for e in got.of("response.done")):
                await got.until("response.done", len(got.of("response.done")) + 1, timeout_s=300)
            return got

    got = asyncio.run(main())
    dones = [e["response"] for e in got.of("response.done")]
    assert [d["status"] for d in dones] == ["cancelled", "completed"], dones
    assert dones[0]["status_details"]["reason"] == "turn_detected"
    cut = next(t for t, ty, e in got.events if ty == "response.done" and e["response"]["id"] == dones[0]["id"])
    assert not [
        t for t, ty, e in got.events if ty == "response.audio.delta" and e["response_id"] == dones[0]["id"] and t > cut
    ]
    whole = turn_row(settings, dones[1]["metadata"]["turn_id"])
    assert {"infection", "days"} <= words(whole.transcript or ""), whole.transcript
    assert "amoxicillin" in (whole.answer or "").lower()
    assert turn_row(settings, dones[0]["metadata"]["turn_id"]).live.get("continued_by_next_utterance") is True


# ---- languages, real recordings, limits ---------------------------------------------------------------------------
def test_a_chinese_question_is_heard_and_answered_in_chinese(live_server, key, knowledge, settings) -> None:
    """Spoken by the Mandarin voice with no language set: the transcript is Chinese (Simplified script), and so
    are the answer and the voice that speaks it (Whisper base mishears the drug and disease names here, so the
    answer may be the knowledge base's no-answer reply, in Chinese)."""
    import io

    from workers.celery_app import celery_app

    out = celery_app.send_task(
        "tts.synthesize", kwargs={"text": "成人急性中耳炎用什么抗生素？", "language": "zh", "speed": 1.0}
    ).get(timeout=120)
    samples, rate = sf.read(io.BytesIO((settings.data_dir / out["audio_ref"]).read_bytes()), dtype="int16")
    audio = soxr.resample(samples, rate, RATE).astype("<i2").tobytes()

    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await stream(conn, silence(0.3) + audio + silence(1.5))
            await got.until("response.done", timeout_s=300)
            return got

    got = asyncio.run(main())
    completed = got.of("conversation.item.input_audio_transcription.completed")[0]
    cjk = re.compile(r"[\u4e00-\u9fff]")
    assert completed["language"] == "zh" and len(cjk.findall(completed["transcript"])) >= 6, completed
    assert "抗生素" in completed["transcript"]
    done = got.of("response.done")[0]["response"]
    assert done["status"] == "completed"
    answer = got.of("response.audio_transcript.done")[0]["transcript"]
    assert len(cjk.findall(answer)) >= 5, answer
    reply = audio_of(got.of("response.audio.delta"))
    assert reply.shape[0] > RATE // 2
    from workers.celery_app import celery_app as app

    pcm16k = soxr.resample(reply, RATE, 16000).astype("<i2").tobytes()
    heard = app.send_task("live.transcribe", kwargs={"pcm": base64.b64encode(pcm16k).decode(), "language": "zh"}).get(
        timeout=120
    )["text"]
    assert len(cjk.findall(heard)) >= 4, heard  # Chinese speech, not an English voice reading Chinese


def test_a_real_recording_is_transcribed_like_whisper_hears_it_offline(live_server, key, settings) -> None:
    """A real recording (not our own voice), streamed at real-time pace: its final transcript has the words of
    the reference, and it is answered (here: the knowledge base has nothing on it)."""
    from tests.conftest import eval_data

    path = eval_data("speech", "en_jfk_16k_mono.wav")
    samples, rate = sf.read(str(path), dtype="int16")
    audio = soxr.resample(samples, rate, RATE).astype("<i2").tobytes()

    async def main() -> Collector:
        async with client(live_server, key).beta.realtime.connect(model="medvoice-realtime") as conn:
            got = Collector(conn)
            await conn.session.update(session={"input_audio_transcription": {"language": "en"}})
            await stream(conn, audio + silence(1.5))
            while not got.of("response.done") or len(got.of("response.done")) < len(
                got.of("input_audio_buffer.committed")
            ):
                await got.until("response.done", len(got.of("response.done")) + 1, timeout_s=300)
            return got

    got = asyncio.run(main())
    heard = " ".join(e["transcript"] for e in got.of("conversation.item.input_audio_transcription.completed"))
    reference = words("And so my fellow Americans ask not what your country can do for you, ask what you can do")
    assert len(reference & words(heard)) >= len(reference) - 2, heard
    assert got.of("conversation.item.input_audio_transcription.delta"), "no partial transcript of an 11 s recording"
    assert got.of("response.done")[-1]["response"]["status"] == "completed"


def test_session_limits_close_with_reasons(live_server, key, api, tokens, settings) -> None:
    async def main() -> tuple[int, str, str]:
        opened = []
        try:
            for _ in range(settings.live_max_sessions_per_user):
                ws = await websockets.connect(
                    f"ws://{live_server}/v1/realtime", additional_headers={"Authorization": f"Bearer {key}"}
                )
                created = json.loads(await ws.recv())
                assert created["type"] == "session.created" and created["session"]["medvoice"]["consultation_id"]
                opened.append(ws)
            extra = await websockets.connect(
                f"ws://{live_server}/v1/realtime", additional_headers={"Authorization": f"Bearer {key}"}
            )
            try:
                await asyncio.wait_for(extra.recv(), 10)
                raise AssertionError("the session over the limit was not closed")
            except websockets.exceptions.ConnectionClosed as exc:
                code, reason = exc.rcvd.code, exc.rcvd.reason
            # Another user is not held back by ann's sessions.
            other = await websockets.connect(
                f"ws://{live_server}/v1/realtime", additional_headers={"Authorization": tokens["ben"]["Authorization"]}
            )
            kind = json.loads(await other.recv())["type"]
            await other.close()
            return code, reason, kind
        finally:
            for ws in opened:
                await ws.close()

    code, reason, kind = asyncio.run(main())
    assert code == 4429 and "live sessions" in reason
    assert kind == "session.created"


def test_a_disabled_user_is_closed_mid_session(live_server, settings, api, monkeypatch) -> None:
    from app import users as svc
    from app.routes import realtime as realtime_routes

    monkeypatch.setattr(realtime_routes, "AUTH_RECHECK_S", 0.5)
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "cora", "password-1234", svc.Role.clinician)
    token = api.post("/v1/auth/token", data={"username": "cora", "password": "password-1234"}).json()["access_token"]

    async def main() -> tuple[int, str, list[str]]:
        async with websockets.connect(
            f"ws://{live_server}/v1/realtime", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            with session_scope(settings.resolved_database_url) as db:
                svc.set_active(db, "cora", False)
            seen = []
            try:
                while True:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["type"])
            except websockets.exceptions.ConnectionClosed as exc:
                return exc.rcvd.code, exc.rcvd.reason, seen

    code, reason, seen = asyncio.run(main())
    assert code == 4401 and "disabled" in reason and "error" in seen
