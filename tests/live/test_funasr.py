"""FunASR clients' live dictation, end to end: a client written from FunASR's protocol description against a real
uvicorn (the API port's /v1/asr/funasr and the dedicated port's root path), real Redis and a real worker serving
the live queue with faster-whisper; speech made at test time by the worker's Piper voice, and the real Chinese
recordings in ../shared/eval-data/speech where they are present."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.conftest import eval_data, serve_in_thread, wait_for
from tests.consultation.shared import worker_env
from tests.live import funasr_client as fc
from workers.core.settings import Settings

websockets = pytest.importorskip("websockets")
pytestmark = pytest.mark.slow

PASSWORD = "password-1234"
FEVER = "The patient has a fever and a sore throat."
DOSE = "Take two tablets every six hours with food."
PRESSURE = "Her blood pressure was high this morning."
VISIT = "Please book a follow up visit in two weeks."
# Long enough for several partial transcripts even when the machine is busy (each can take a second or two).
LONG = "The patient has had a fever and a sore throat for three days, and she is coughing at night."
MORE = "Her temperature was high yesterday and she has not been eating well."
KEYS = {
    FEVER: {"fever", "sore", "throat"},
    DOSE: {"tablets", "hours", "food"},
    PRESSURE: {"blood", "pressure", "morning"},
    VISIT: {"follow", "visit", "weeks"},
    LONG: {"fever", "throat", "days", "coughing", "night"},
    MORE: {"temperature", "yesterday", "eating"},
}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def run(coro):
    return asyncio.run(coro)


# ---- servers and worker ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from app.migrate import upgrade

    root = tmp_path_factory.mktemp("funasr")
    url = f"sqlite:///{root / 'medvoice.db'}"
    upgrade(url)
    # Partials wait longer before they expire than in production: a busy test machine thins them out otherwise,
    # and the 2pass test wants to see some (how many is bench/live_asr.py's business).
    return Settings(
        database_url=url, data_dir=root / "data", kb_dir=root / "data" / "knowledge", live_partial_expire_s=10.0
    )


@pytest.fixture(scope="module")
def servers(settings: Settings) -> Iterator[dict[str, str]]:
    """The API (its /v1/asr/funasr), the dedicated FunASR app, and a strict one (tiny limits, a foreign allow-list)."""
    from app.main import create_app
    from app.routes.funasr import create_funasr_app

    strict = settings.model_copy(
        update={"funasr_allow": "10.255.255.0/24", "live_max_frame_bytes": 4096, "live_max_session_s": 4.0}
    )
    running = [
        serve_in_thread(create_app(settings)),
        serve_in_thread(create_funasr_app(settings)),
        serve_in_thread(create_funasr_app(strict)),
    ]
    yield {
        "api": f"ws://127.0.0.1:{running[0][2]}/v1/asr/funasr",
        "http": f"http://127.0.0.1:{running[0][2]}",
        "funasr": f"ws://127.0.0.1:{running[1][2]}/",
        "strict": f"ws://127.0.0.1:{running[2][2]}/",
    }
    for server, thread, _port in running:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def token(settings: Settings, servers: dict[str, str]) -> str:
    import httpx

    from app import users as svc
    from workers.core.db import session_scope
    from workers.core.records import Role

    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "dana", PASSWORD, Role.clinician)
    r = httpx.post(f"{servers['http']}/v1/auth/token", data={"username": "dana", "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def worker(start_module_worker, settings: Settings):
    import base64

    from workers.celery_app import celery_app

    w = start_module_worker("all", timeout_s=240, **worker_env(settings))
    # One transcription first: the engine's first call is slower than the rest (lazy set-up inside CTranslate2).
    noise = (np.random.default_rng(0).standard_normal(16000) * 3000).astype("<i2").tobytes()
    celery_app.send_task("live.transcribe", kwargs={"pcm": base64.b64encode(noise).decode()}).get(timeout=120)
    return w


@pytest.fixture(scope="module")
def pcm(worker, settings: Settings):
    """pcm(text, rate, language) → PCM16 mono of the worker's voice for the language saying it (tts.synthesize)."""
    from workers.celery_app import celery_app

    cache: dict[tuple[str, int, str], np.ndarray] = {}

    def make(text: str, rate: int = 16000, language: str = "en") -> np.ndarray:
        if (text, rate, language) not in cache:
            out = celery_app.send_task("tts.synthesize", kwargs={"text": text, "speed": 1.0, "language": language}).get(
                timeout=120
            )
            samples, sr = sf.read(io.BytesIO((Path(settings.data_dir) / out["audio_ref"]).read_bytes()), dtype="int16")
            cache[(text, rate, language)] = soxr.resample(samples, sr, rate).astype(np.int16)
        return cache[(text, rate, language)]

    return make


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def dictation(*parts: np.ndarray, rate: int = 16000) -> np.ndarray:
    """Phrases with a pause around each, as a clinician dictates."""
    pieces = [silence(0.5, rate)]
    for p in parts:
        pieces += [p, silence(1.2, rate)]
    return np.concatenate(pieces)


def stream(uri: str, mode: str, audio: np.ndarray, rate: int = 16000, realtime: bool = True, **kw) -> fc.Result:
    first = kw.pop("first", None) or fc.config(mode, rate=rate, **kw.pop("cfg", {}))
    frames = fc.pcm_frames(fc.as_pcm(audio), rate, 60)
    return run(fc.run(uri, first, frames, frame_s=0.06 if realtime else 0.0, **kw))


def check_timestamps(message: dict, audio_ms: int) -> list[list[int]]:
    pairs = json.loads(message["timestamp"])
    assert pairs, message
    starts = [s for s, _ in pairs]
    assert starts == sorted(starts)
    assert all(0 <= s <= e <= audio_ms for s, e in pairs), (pairs, audio_ms)
    assert sum(len(sent["ts_list"]) for sent in message["stamp_sents"]) == len(pairs)
    return pairs


# ---- each mode -------------------------------------------------------------------------------------------------------
def test_2pass_sends_partials_and_a_final_per_utterance_then_is_end(servers, token, pcm) -> None:
    audio = dictation(np.concatenate([pcm(LONG), pcm(MORE)]), pcm(DOSE))  # ~11 s of speech, then a short phrase
    res = stream(f"{servers['api']}?token={token}", "2pass", audio, end={"is_speaking": False, "is_end": True})
    assert not res.errors, res.errors
    finals = [m for m in res.of("2pass-offline") if not m.get("is_end")]
    assert len(finals) >= 2, res.messages  # the pause between the phrases ends the first utterance
    assert all(set(m) >= {"mode", "wav_name", "text", "is_final"} for m in res.messages)
    assert res.of("2pass-online"), "no partial transcript while speaking"
    # is_final only on the last result, after is_speaking: false; then the exact is_end reply.
    assert [m["is_final"] for m in finals[:-1]] == [False] * (len(finals) - 1) and finals[-1]["is_final"]
    assert res.messages[-1] == {
        "mode": "2pass-offline",
        "wav_name": "demo",
        "text": "",
        "is_final": True,
        "is_end": True,
    }
    text = res.printed("2pass")
    assert KEYS[LONG] | KEYS[MORE] | KEYS[DOSE] <= words(text), text
    assert words(finals[0]["text"]) & KEYS[LONG] and not words(finals[0]["text"]) & KEYS[DOSE]
    audio_ms = len(audio) * 1000 // 16000
    previous_end = 0
    for m in finals:
        if m["text"]:
            pairs = check_timestamps(m, audio_ms)
            assert pairs[0][0] >= previous_end - 50  # utterances follow one another on the stream's clock
            previous_end = pairs[-1][1]
    # The first phrase starts after the 0.5 s of silence and ends before the second begins.
    first = json.loads(finals[0]["timestamp"])
    assert 300 <= first[0][0] <= 1200 and first[-1][1] <= 500 + (len(pcm(LONG)) + len(pcm(MORE))) * 1000 // 16000 + 400
    assert len(first) == len(finals[0]["text"].split())  # one pair per English word


def test_online_sends_appendable_text_and_a_final_without_is_end(servers, pcm) -> None:
    audio = dictation(pcm(PRESSURE))
    res = stream(servers["funasr"], "online", audio)  # the older style: is_speaking false alone
    assert not res.errors, res.errors
    online = res.of("online")
    assert online and all(m["mode"] == "online" for m in res.messages)
    assert online[-1]["is_final"] and not any(m["is_final"] for m in online[:-1])
    assert not any(m.get("is_end") for m in res.messages)
    assert KEYS[PRESSURE] <= words(res.printed("online")), res.printed("online")


def test_offline_sent_fast_gives_one_final_equal_to_the_asr_of_the_same_audio(servers, pcm) -> None:
    import base64

    from workers.celery_app import celery_app

    audio = np.concatenate([pcm(VISIT), silence(0.3), pcm(FEVER)])
    res = stream(servers["funasr"], "offline", audio, realtime=False, end={"is_speaking": False, "is_end": True})
    finals = res.of("offline")
    assert [m["is_final"] for m in finals] == [True, True] and finals[1].get("is_end"), res.messages
    direct = celery_app.send_task(
        "live.transcribe",
        kwargs={"pcm": base64.b64encode(fc.as_pcm(audio)).decode(), "language": None, "words": True},
    ).get(timeout=120)
    assert finals[0]["text"] == direct["text"]  # nothing added, lost or rewritten on the way
    assert KEYS[VISIT] | KEYS[FEVER] <= words(finals[0]["text"])
    check_timestamps(finals[0], len(audio) * 1000 // 16000)


def test_8khz_input_is_resampled(servers, pcm) -> None:
    audio = dictation(pcm(FEVER, 8000), rate=8000)
    res = stream(servers["funasr"], "2pass", audio, rate=8000)
    assert not res.errors and res.final and res.final["is_final"]
    assert KEYS[FEVER] <= words(res.printed("2pass")), res.printed("2pass")
    check_timestamps(res.of("2pass-offline")[0], len(audio) * 1000 // 8000)


@pytest.mark.parametrize(("wav_format", "fmt"), [("wav", "WAV"), ("others", "FLAC")])
def test_a_whole_file_is_decoded(servers, pcm, wav_format: str, fmt: str) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.concatenate([pcm(DOSE, 22050)]), 22050, format=fmt, subtype="PCM_16")
    data = buf.getvalue()
    chunks = [data[i : i + 3000] for i in range(0, len(data), 3000)]  # FunASR's client sends files in pieces
    first = fc.config("offline", wav_format=wav_format)
    res = run(fc.run(servers["funasr"], first, chunks))
    assert not res.errors, res.errors
    assert KEYS[DOSE] <= words(res.final["text"]), res.final


def test_chinese_recording_per_character_timestamps_in_simplified(servers) -> None:
    import opencc

    path = eval_data("speech", "funasr_example_0.wav")
    samples, rate = sf.read(path, dtype="int16")
    audio = np.concatenate([samples, silence(1.0, rate)])
    res = stream(servers["funasr"], "2pass", audio, rate=rate, cfg={"svs_lang": "zh"})
    assert not res.errors, res.errors
    text = res.printed("2pass")
    assert re.search("[\u4e00-\u9fff]", text), text
    assert opencc.OpenCC("t2s").convert(text) == text  # Simplified, whatever script Whisper chose
    hits = sum(ch in text for ch in "欢迎大家来体验达摩院推出的语音识别模型")
    assert hits >= 12, text
    for m in res.of("2pass-offline"):
        if m["text"]:
            pairs = check_timestamps(m, len(audio) * 1000 // rate)
            chars = re.findall("[\u4e00-\u9fff]|[A-Za-z0-9']+", m["text"])
            assert len(pairs) == len(chars), (m["text"], pairs)  # one pair per Chinese character


def test_each_final_detects_its_own_language(servers, pcm) -> None:
    """No svs_lang: a clinician who switches language mid-session gets each utterance in its own language."""
    audio = dictation(pcm(DOSE), pcm("成人流感用奥司他韦的剂量是多少", language="zh"))
    res = stream(servers["funasr"], "2pass", audio)
    assert not res.errors, res.errors
    finals = [m for m in res.of("2pass-offline") if m.get("text")]
    assert len(finals) >= 2, res.messages
    assert KEYS[DOSE] & words(finals[0]["text"]), finals[0]
    assert re.search("[\u4e00-\u9fff]{4}", finals[-1]["text"]), finals[-1]  # not forced into English


def test_hotwords_reach_the_asr(servers, pcm) -> None:
    """A made-up drug name Whisper cannot know is written as the hotword spells it only when it is sent."""
    audio = dictation(pcm("Start the patient on Zorvexin tonight."))
    plain = stream(servers["funasr"], "offline", audio, realtime=False)
    hot = stream(
        servers["funasr"],
        "offline",
        audio,
        realtime=False,
        cfg={"hotwords": json.dumps({"ear": 1, "Zorvexin": 30}), "itn": False},
    )
    assert not hot.errors, hot.errors
    assert "zorvexin" not in plain.final["text"].lower(), plain.final
    assert "zorvexin" in hot.final["text"].lower(), hot.final


def test_two_streams_on_one_connection(servers, pcm) -> None:
    """After a stream's end, a new configuration starts the next one (FunASR servers keep the connection)."""
    import websockets.asyncio.client as wsc

    async def go() -> list[dict]:
        got: list[dict] = []
        async with wsc.connect(servers["funasr"], subprotocols=["binary"], ping_interval=None) as ws:
            for name, text in (("one", FEVER), ("two", VISIT)):
                await ws.send(json.dumps(fc.config("offline", wav_name=name)))
                for frame in fc.pcm_frames(fc.as_pcm(pcm(text)), 16000, 60):
                    await ws.send(frame)
                await ws.send(json.dumps({"is_speaking": False, "is_end": True}))
                while True:
                    m = json.loads(await ws.recv())
                    got.append(m)
                    if m.get("is_end"):
                        break
        return got

    got = [m for m in run(go()) if m["text"]]
    assert [m["wav_name"] for m in got] == ["one", "two"]
    assert KEYS[FEVER] <= words(got[0]["text"]) and KEYS[VISIT] <= words(got[1]["text"])


def test_four_concurrent_sessions_do_not_mix(servers, token, pcm) -> None:
    phrases = [FEVER, DOSE, PRESSURE, VISIT]
    audios = {p: dictation(pcm(p)) for p in phrases}

    async def all_at_once() -> list[fc.Result]:
        return await asyncio.gather(
            *(
                fc.run(
                    servers["api"] if i % 2 else servers["funasr"],
                    fc.config("2pass", wav_name=f"s{i}"),
                    fc.pcm_frames(fc.as_pcm(audios[p]), 16000, 60),
                    frame_s=0.06,
                    headers={"Authorization": f"Bearer {token}"} if i % 2 else None,
                )
                for i, p in enumerate(phrases)
            )
        )

    results = run(all_at_once())
    for i, (phrase, res) in enumerate(zip(phrases, results)):
        assert not res.errors, res.errors
        assert {m["wav_name"] for m in res.messages} == {f"s{i}"}
        got = words(res.printed("2pass"))
        assert KEYS[phrase] <= got, (phrase, got)
        others = set().union(*(KEYS[p] for p in phrases if p != phrase)) - KEYS[phrase]
        assert not got & others, (phrase, got)
        assert res.final["is_final"]


# ---- credentials and the allow-list ----------------------------------------------------------------------------------
def _refused(res: fc.Result, words_in_reason: str) -> None:
    assert res.close_code == 1008, (res.close_code, res.messages)
    assert words_in_reason in res.close_reason
    assert res.messages and "text" in res.messages[0] and "mode" in res.messages[0] and res.messages[0]["code"]


def test_the_api_port_needs_a_valid_jwt(servers, token) -> None:
    _refused(run(fc.run(servers["api"], fc.config("offline"), [])), "not authenticated")
    _refused(run(fc.run(f"{servers['api']}?token=not-a-jwt", fc.config("offline"), [])), "not authenticated")
    ok = run(fc.run(servers["api"], fc.config("offline"), [], headers={"Authorization": f"Bearer {token}"}))
    assert ok.final == {"mode": "offline", "wav_name": "demo", "text": "", "is_final": True}


def test_the_dedicated_port_admits_its_allow_list_or_a_jwt(servers, token) -> None:
    # The strict server allows only 10.255.255.0/24: loopback needs a JWT there.
    _refused(run(fc.run(servers["strict"], fc.config("offline"), [])), "address")
    _refused(run(fc.run(servers["strict"], fc.config("offline"), [], headers={"Authorization": "Bearer x"})), "not")
    ok = run(fc.run(servers["strict"], fc.config("offline"), [], headers={"Authorization": f"Bearer {token}"}))
    assert ok.final and not ok.errors
    free = run(fc.run(servers["funasr"], fc.config("offline"), []))  # the default allow-list is loopback
    assert free.final and not free.errors


# ---- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00\x01" * 100, "no_configuration"),
        ('{"mode": "2pass", ', "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ({"mode": "fast"}, "unknown_mode"),
        ({"mode": "2pass", "audio_fs": 12345}, "unsupported_audio_fs"),
        ({"mode": "2pass", "audio_fs": "16000"}, "unsupported_audio_fs"),
        ({"mode": "2pass", "svs_lang": "klingon"}, "unsupported_language"),
        ({"mode": "2pass", "wav_format": "exe"}, "unsupported_format"),
    ],
)
def test_a_bad_first_message_is_answered_and_closed(servers, first, code: str) -> None:
    res = run(fc.run(servers["funasr"], first, [b"\x00\x00" * 800]))
    assert res.errors and res.errors[0]["code"] == code, res.messages
    assert res.errors[0]["text"] == "" and "mode" in res.errors[0] and res.errors[0]["error"]
    assert res.close_code == 1003 and res.close_reason


def test_bad_frames_and_options_are_reported_and_the_session_goes_on(servers, pcm) -> None:
    audio = fc.as_pcm(dictation(pcm(FEVER)))
    frames = fc.pcm_frames(audio, 16000, 60)
    frames.insert(3, b"\x01\x02\x03")  # half a sample
    frames.insert(5, "{not json")  # a text frame
    first = fc.config("2pass", hotwords="drugs: amoxicillin")
    res = run(fc.run(servers["funasr"], first, frames))
    codes = [m["code"] for m in res.errors]
    assert {"invalid_hotwords", "invalid_audio", "invalid_json"} <= set(codes), res.errors
    assert all(m["text"] == "" and m["mode"] == "2pass-offline" for m in res.errors)
    assert KEYS[FEVER] <= words(res.printed("2pass")) and res.final["is_final"]


def test_malformed_json_mid_stream_is_reported(servers) -> None:
    async def go() -> list[dict]:
        import websockets.asyncio.client as wsc

        async with wsc.connect(servers["funasr"], subprotocols=["binary"], ping_interval=None) as ws:
            await ws.send(json.dumps(fc.config("offline")))
            await ws.send("{oops")
            await ws.send(json.dumps({"is_speaking": False}))
            return [json.loads(await ws.recv()), json.loads(await ws.recv())]

    error, final = run(go())
    assert error["code"] == "invalid_json" and error["is_final"] is False
    assert final == {"mode": "offline", "wav_name": "demo", "text": "", "is_final": True}


def test_huge_hotwords_are_refused_and_ignored(servers) -> None:
    huge = json.dumps({f"word{i}": i for i in range(2000)})
    res = run(fc.run(servers["funasr"], fc.config("offline", hotwords=huge), [fc.as_pcm(silence(0.5))]))
    assert [m["code"] for m in res.errors] == ["hotwords_too_large"]
    assert res.final["text"] == "" and res.final["is_final"]


def test_an_oversize_frame_closes_with_1009(servers, token) -> None:
    res = run(fc.run(servers["strict"], fc.config("2pass"), [b"\x00" * 8192], headers=_bearer(token)))
    assert res.errors[-1]["code"] == "frame_too_large" and res.close_code == 1009


def test_a_stream_past_the_session_limit_is_closed(servers, token) -> None:
    frames = [fc.as_pcm(silence(0.1))] * 60  # 6 s, sent fast, past the strict server's 4 s
    res = run(fc.run(servers["strict"], fc.config("offline"), frames, headers=_bearer(token)))
    assert res.errors[-1]["code"] == "session_too_long" and res.close_code == 1009, res.messages


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("mode", ["2pass", "online", "offline"])
def test_silence_only_gives_an_empty_final(servers, mode: str) -> None:
    res = stream(servers["funasr"], mode, silence(2.5), realtime=mode != "offline")
    assert not res.errors, res.errors
    assert [m for m in res.messages if m["text"]] == []
    assert res.final == {"mode": fc_final(mode), "wav_name": "demo", "text": "", "is_final": True}


def fc_final(mode: str) -> str:
    return {"2pass": "2pass-offline", "online": "online", "offline": "offline"}[mode]


def test_a_client_gone_mid_utterance_leaves_the_server_serving(servers, settings, pcm) -> None:
    from workers.core.db import session_scope
    from workers.core.records import AuditEvent

    frames = fc.pcm_frames(fc.as_pcm(dictation(pcm(DOSE))), 16000, 60)
    run(fc.run(servers["funasr"], fc.config("2pass", wav_name="gone"), frames, frame_s=0.06, disconnect_after=40))
    res = stream(servers["funasr"], "2pass", dictation(pcm(FEVER)))
    assert KEYS[FEVER] <= words(res.printed("2pass"))

    def audited() -> bool:
        with session_scope(settings.resolved_database_url) as db:
            rows = db.query(AuditEvent).filter(AuditEvent.action == "funasr.session").all()
            return any(r.detail.get("close") == "client" and r.detail.get("audio_s", 0) > 1 for r in rows)

    wait_for(audited, 30, "the abandoned session's audit event")


def test_every_session_is_audited_without_its_text(servers, settings, token) -> None:
    from workers.core.db import session_scope
    from workers.core.records import AuditEvent

    run(fc.run(servers["api"], fc.config("offline"), [], headers=_bearer(token)))
    with session_scope(settings.resolved_database_url) as db:
        rows = db.query(AuditEvent).filter(AuditEvent.action == "funasr.session").all()
        assert any(r.actor_id for r in rows) and any(r.actor_id is None for r in rows)
        for r in rows:
            assert r.record_type == "live_session" and r.detail["address"] == "127.0.0.1"
            assert {"port", "started", "duration_s", "modes", "audio_s", "close"} <= set(r.detail)
            dumped = json.dumps(r.detail).lower()
            assert not any(w in dumped for w in ("fever", "tablets", "throat", "pressure"))


def test_a_repeated_end_of_input_gets_no_second_final(servers) -> None:
    """Some clients send is_speaking: false again when they close: nothing is left to finish."""

    async def go() -> list[dict]:
        import websockets.asyncio.client as wsc

        async with wsc.connect(servers["funasr"], subprotocols=["binary"], ping_interval=None) as ws:
            await ws.send(json.dumps(fc.config("offline")))
            await ws.send(json.dumps({"is_speaking": False}))
            await ws.send(json.dumps({"is_speaking": False}))
            await ws.send(json.dumps({"is_speaking": False, "is_end": True}))
            return [json.loads(await ws.recv()), json.loads(await ws.recv())]

    final, end = run(go())
    assert final == {"mode": "offline", "wav_name": "demo", "text": "", "is_final": True}
    assert end == {**final, "is_end": True}
