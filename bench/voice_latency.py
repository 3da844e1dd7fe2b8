"""Voice latency: the silence after a spoken question, live (OpenAI Realtime WebSocket) in the product's fast
configuration and in the naive one, and REST upload, same questions, same run. Prints figures; asserts none.

    python bench/voice_latency.py                       # 20 English + 10 Chinese questions, three paths each
    python bench/voice_latency.py --en 6 --zh 4 --json /tmp/voice.json

The stack is bench/consultation.py's, private to the run: Redis, a Chroma server, one worker process per pool
(asr, live, rag, llm, tts) on this machine's cores, the sample knowledge base ingested through the API, and two
API processes on the same Redis, database and workers: the default (fast) one, and a naive one with the live
levers off (`NAIVE`: the final transcript starts at the endpoint, Whisper's full 30 s window, no prefill). The
questions are the sample-KB questions of bench/answer_safety_questions.yaml (answerable ones first), spoken at
bench time by the product's own voices (English: Piper; Chinese: the Mandarin voice) at natural speed. Each
question goes through the three paths in a rotating order, and before each the llm process's KV cache and
the prefills kept in Redis are emptied (the same question just answered on another path would otherwise find
its prompt evaluated already).

Live: each question is streamed at real-time pace in 100 ms frames (0.5 s of silence before it, 1.5 s after)
over `/v1/realtime` with server VAD and the session's language set. Times run from the **last voiced sample**
of the question (found in the clip by energy; the wall time at which the frame holding it was sent) to:
`input_audio_buffer.speech_stopped`, the final transcript (`...input_audio_transcription.completed`), the first
answer text delta, and the **first audio delta**. Once the first audio has arrived the bench cancels the reply
(`response.cancel`) and goes on: the figure of interest is the wait, not the playback. Also per configuration:
the final transcripts' error rate against the question asked (WER English, CER Chinese), partial transcripts
per utterance and the time between them, how often the transcript made at the first pause was used and how
many were thrown away as speech resumed, and for the answers the LLM wrote whether their prompt had been
prefilled (in place, moved from Redis, or not).

REST: the same clip (speech only) uploaded as a turn; upload start → the first `audio` event on its SSE stream.

The waterfall of the median live turn splits the wait into: endpoint silence (VAD), then from the endpoint the
transcript in hand (the pause transcript, or the asr stage), the turn recorded and sent, retrieval, answer,
first text, and the first clip and relay, from the turn's own stage timings and the gateway's (`turns.live`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import answer_safety  # bench/answer_safety.py: the questions and the sample-KB ingest
from consultation import Api, Stack, fmt, log, make_users, pct, tear_down, token
from live_asr import error_rate  # bench/live_asr.py: WER (English) / CER (Chinese) against the question asked

RATE = 24000
CHUNK_S = 0.1
# The naive live configuration, measured in the same run: the final transcript starts at the endpoint, Whisper's
# encoder pays for its whole 30 s window, and no prompt is prefilled (the API's settings; the workers are shared).
NAIVE = {"MEDVOICE_LIVE_SPECULATE": "false", "MEDVOICE_LIVE_ASR_FIT_WINDOW": "false", "MEDVOICE_LIVE_PREFILL": "false"}


def cool_llm(redis_url: str) -> None:
    """The llm process's KV cache and the prefills kept in Redis, emptied: the same question asked again on the
    next path would otherwise find its prompt evaluated by the last one (in a clinic each question is new)."""
    import redis

    from workers.celery_app import celery_app

    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter("medvoice:prefill:*"):
        r.delete(key)
    other = {"n": 1, "text": "Unrelated.", "chunk_id": "-", "doc_id": "-", "title": "", "source": "", "score": 0.0}
    # (The throwaway prompt's own Redis copy matches no real prompt: it may stay.)
    celery_app.send_task("llm.prefill", kwargs={"question": "-", "passages": [other]}).get(timeout=120)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (clock ticks from /proc)."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _descendants(pid: int) -> list[int]:
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def last_voiced_s(samples: Any, rate: int) -> float:
    """End of the last 10 ms frame louder than 2 % of the clip's peak: where the speaker stopped."""
    import numpy as np

    frame = rate // 100
    n = samples.shape[0] // frame
    rms = np.sqrt((samples[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1))
    loud = np.nonzero(rms > 0.02 * max(float(rms.max()), 1.0))[0]
    return float((loud[-1] + 1) * frame / rate) if loud.size else samples.shape[0] / rate


def speak(data_dir: Path, text: str, language: str) -> dict[str, Any]:
    """The question in the product's own voice: 16-bit WAV bytes and PCM16 at 24 kHz."""
    import soundfile as sf
    import soxr

    from workers.celery_app import celery_app

    out = celery_app.send_task("tts.synthesize", kwargs={"text": text, "language": language, "speed": 1.0}).get(
        timeout=300
    )
    samples, rate = sf.read(str(data_dir / out["audio_ref"]), dtype="int16")
    pcm = soxr.resample(samples, rate, RATE).astype("<i2")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype="PCM_16", format="WAV")
    return {
        "wav": buf.getvalue(),
        "pcm": pcm.tobytes(),
        "voiced_s": last_voiced_s(pcm, RATE),
        "audio_s": len(pcm) / RATE,
    }


async def live_turn(ws_url: str, key: str, clip: dict[str, Any], language: str) -> dict[str, Any]:
    import numpy as np
    import websockets

    silence = np.zeros(int(RATE * 0.5), dtype="<i2").tobytes()
    audio = silence + clip["pcm"] + silence * 3
    lead = len(silence) / 2 / RATE
    seen: dict[str, float] = {}
    partial_at: list[float] = []
    out: dict[str, Any] = {}
    streamed = asyncio.Event()
    answered = asyncio.Event()  # every utterance so far has its response.done
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {"transcription": {"language": language}, "turn_detection": {"type": "server_vad"}}
                        },
                    },
                }
            )
        )

        async def receive() -> None:
            # A pause inside the question can end an utterance early; the reply that counts is the one to the
            # last utterance, so the times are taken from that utterance's events.
            commits = dones = 0
            async for raw in ws:
                ev = json.loads(raw)
                t = time.perf_counter()
                kind = ev["type"]
                if kind == "input_audio_buffer.speech_stopped":
                    seen.pop("response.output_audio.delta", None)
                    seen.pop("response.output_audio_transcript.delta", None)
                    seen.pop("conversation.item.input_audio_transcription.completed", None)
                    seen[kind] = t
                    continue
                if kind == "input_audio_buffer.committed":
                    commits += 1
                    answered.clear()
                if kind == "conversation.item.input_audio_transcription.delta":
                    partial_at.append(t)
                seen.setdefault(kind, t)
                if kind == "response.output_audio.delta" and out.get("cancelled_for") != commits:
                    out["cancelled_for"] = commits
                    await ws.send(json.dumps({"type": "response.cancel"}))
                if kind == "response.done":
                    dones += 1
                    out["response"] = ev["response"]
                    out["utterances"] = commits
                    if dones >= commits:
                        answered.set()
                if kind == "conversation.item.input_audio_transcription.completed":
                    out["transcript"] = ev.get("transcript") or ""
                if kind == "error":
                    out.setdefault("errors", []).append(ev["error"].get("code"))

        reader = asyncio.create_task(receive())
        step = int(RATE * CHUNK_S) * 2
        t0 = time.perf_counter()
        end_at = None
        for i in range(0, len(audio), step):
            due = t0 + i / 2 / RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await ws.send(
                json.dumps(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio[i : i + step]).decode()}
                )
            )
            if end_at is None and (i + step) / 2 / RATE >= lead + clip["voiced_s"]:
                end_at = time.perf_counter()  # the frame holding the last voiced sample has been sent
        streamed.set()
        await asyncio.wait_for(answered.wait(), 300)
        await asyncio.sleep(0.3)  # a last utterance cut from the trailing audio would show up by now
        await asyncio.wait_for(answered.wait(), 300)
        reader.cancel()
    rel = {k: (seen[k] - end_at) if k in seen and end_at else None for k in seen}
    return {
        "speech_stopped_s": rel.get("input_audio_buffer.speech_stopped"),
        "transcript_s": rel.get("conversation.item.input_audio_transcription.completed"),
        "first_text_s": rel.get("response.output_audio_transcript.delta"),
        "first_audio_s": rel.get("response.output_audio.delta"),
        "partials": len(partial_at),
        "utterances": out.get("utterances", 1),
        "partial_gaps": [b - a for a, b in zip(partial_at, partial_at[1:])],
        "transcript": out.get("transcript", ""),
        "turn_id": ((out.get("response") or {}).get("metadata") or {}).get("turn_id"),
        "status": (out.get("response") or {}).get("status"),
        "errors": out.get("errors", []),
    }


def waterfall(api: Api, turn_id: str) -> dict[str, float | None]:
    t = api.client.get(f"/v1/turns/{turn_id}").json()
    tm = t.get("timings") or {}

    def total(stage: str) -> float | None:
        return (tm.get(stage) or {}).get("total_s")

    live = t.get("live") or {}
    return {
        "asr": total("asr"),
        "rag": total("rag"),
        "answer": total("llm"),
        "heard_wait": live.get("heard_wait_s"),
        "turn_made": live.get("turn_made_s"),
        "gateway_first_text": live.get("first_text_s"),
        "gateway_first_audio": live.get("first_audio_s"),
        "speculative": bool(live.get("speculative_transcript")),
        "discarded": int(live.get("speculations_discarded") or 0),
        "prefills_sent": int(live.get("prefills_sent") or 0),
        "prefill": (tm.get("llm") or {}).get("prefill"),  # held / moved / none: only for an LLM-written answer
        "cached_tokens": (tm.get("llm") or {}).get("cached_tokens"),
        "prompt_tokens": (tm.get("llm") or {}).get("prompt_tokens"),
    }


def stats(values: list[float | None]) -> tuple[float, float, int]:
    xs = [v for v in values if v is not None]
    if not xs:
        return float("nan"), float("nan"), 0
    return statistics.median(xs), pct(xs, 95), len(xs)


def run(args: argparse.Namespace) -> None:
    from workers.core.settings import get_settings

    models_dir = os.environ.get("MEDVOICE_MODELS_DIR") or str(get_settings().model_root.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-voice-"))
    data = tmp / "data"
    env = {
        **os.environ,
        "MEDVOICE_MODELS_DIR": models_dir,
        "MEDVOICE_DATA_DIR": str(data),
        "MEDVOICE_DATABASE_URL": f"sqlite:///{data / 'medvoice.db'}",
        "MEDVOICE_KB_DIR": str(data / "knowledge"),
        "MEDVOICE_KB_REFRESH_INTERVAL_S": "1",
        "PYTHONUNBUFFERED": "1",
    }
    data.mkdir(parents=True)
    stack = Stack(tmp, env, env)
    try:
        env["MEDVOICE_REDIS_URL"] = stack.start_redis()
        env["MEDVOICE_KB_CHROMA_URL"] = stack.start_chroma(data / "knowledge")
        os.environ.update(env)
        get_settings.cache_clear()
        from app.migrate import upgrade

        upgrade(env["MEDVOICE_DATABASE_URL"])
        make_users(env["MEDVOICE_DATABASE_URL"])
        base = stack.start_api()
        # The naive live configuration: its own API process (the live levers are the API's settings) on the same
        # Redis, database and workers, so both are measured on the same machine state, question by question.
        naive = stack.start_api("api-naive", env={**env, **NAIVE})
        log("starting one worker per pool")
        stack.start_workers("pools")
        admin, clinician = token(base, "bench-admin"), token(base, "bench-clinician")
        log(f"ingesting the sample knowledge base: {answer_safety.ingest(base, admin, None)}")
        # Answerable questions first, then the others (a no-answer reply is spoken too): a wait is a wait.
        questions = sorted(answer_safety.load_sample_questions(), key=lambda q: q["kind"] != "answerable")
        chosen = [q for q in questions if q["language"] == "en"][: args.en] + [
            q for q in questions if q["language"] == "zh"
        ][: args.zh]
        log(f"speaking {len(chosen)} questions with the product's voices")
        clips = [{**q, **speak(data, q["question"], q["language"])} for q in chosen]
        api = Api(base, clinician)
        ws = {
            name: url.replace("http://", "ws://") + "/v1/realtime" for name, url in (("fast", base), ("naive", naive))
        }
        procs = [p for p in stack.procs.values()]
        # A warm-up of each path first: model first calls are not what a clinician meets mid-session.
        for url in ws.values():
            asyncio.run(live_turn(url, clinician, clips[0], clips[0]["language"]))
        cpu0, wall0 = sum(cpu_seconds(p.pid) for p in procs), time.perf_counter()
        rows: list[dict[str, Any]] = []
        paths = [("live", "fast"), ("live", "naive"), ("rest", "fast")]
        for i, clip in enumerate(clips):
            lang = clip["language"]
            for path, config in paths[i % 3 :] + paths[: i % 3]:  # each path goes first as often as the others
                cool_llm(env["MEDVOICE_REDIS_URL"])
                if path == "live":
                    rec = asyncio.run(live_turn(ws[config], clinician, clip, lang))
                    rec["transcript_error"] = error_rate(clip["question"], rec.get("transcript") or "", lang)
                    if rec["turn_id"]:
                        rec["waterfall"] = waterfall(api, rec["turn_id"])
                else:
                    wav = tmp / f"q{i}.wav"
                    wav.write_bytes(clip["wav"])
                    r = api.turn(
                        {"file": wav.name, "path": wav, "lang": lang, "duration_s": clip["audio_s"], "reference": ""}
                    )
                    rec = {
                        "first_audio_s": r.get("client_first_audio_s"),
                        "first_text_s": r.get("client_first_sentence_s"),
                    }
                rows.append(
                    {
                        "path": path,
                        "config": config,
                        "lang": lang,
                        "id": clip["id"],
                        "speech_s": round(clip["voiced_s"], 2),
                        **rec,
                    }
                )
                log(f"{path:4} {config:5} {lang} {clip['id']}: first audio {fmt(rec.get('first_audio_s'))}s")
        cpu = (sum(cpu_seconds(p.pid) for p in procs) - cpu0) / (time.perf_counter() - wall0)
        report(rows, cpu, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "cpu_cores_busy": cpu}, indent=1, default=str))
    finally:
        tear_down(stack, tmp, args.keep)


def report(rows: list[dict[str, Any]], cpu: float, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)  # a log file or pipe too gets whole table rows
    table = Table(title="end of speech (last voiced sample) → …, seconds, p50 / p95 (n)")
    for col in ("path", "lang", "speech_stopped", "final transcript", "first text", "first audio", "WER/CER"):
        table.add_column(col)
    names = {
        ("live", "fast"): "live WebSocket",
        ("live", "naive"): "live, naive",
        ("rest", "fast"): "REST upload → first audio",
    }
    for (path, config), name in names.items():
        for lang in ("en", "zh"):
            sel = [r for r in rows if r["path"] == path and r["config"] == config and r["lang"] == lang]
            if not sel:
                continue
            cells = []
            for key in ("speech_stopped_s", "transcript_s", "first_text_s", "first_audio_s"):
                p50, p95, n = stats([r.get(key) for r in sel])
                cells.append("-" if n == 0 else f"{fmt(p50)} / {fmt(p95)} ({n})")
            errs = [r["transcript_error"] for r in sel if r.get("transcript_error") is not None]
            cells.append(f"{statistics.mean(errs):.3f}" if errs else "-")
            if path == "rest":
                cells[0] = cells[1] = "(upload)"
            table.add_row(name, lang, *cells)
    console.print(table)
    for config in ("fast", "naive"):
        live = [r for r in rows if r["path"] == "live" and r["config"] == config]
        if not live:
            continue
        gaps = [g for r in live for g in r.get("partial_gaps") or []]
        ended = sum(r.get("status") in ("completed", "cancelled") for r in live)
        split = sum(r.get("utterances", 1) > 1 for r in live)
        falls = [r.get("waterfall") or {} for r in live]
        console.print(
            f"[{config}] partial transcripts: {statistics.mean([r['partials'] for r in live]):.1f} per utterance, "
            f"median gap {fmt(statistics.median(gaps) if gaps else None)} s; replies ended: {ended}/{len(live)}; "
            f"errors: {sum(len(r.get('errors') or []) for r in live)}; questions split at a pause: {split}; "
            f"transcript made at the first pause used: {sum(bool(w.get('speculative')) for w in falls)}/{len(live)}, "
            f"thrown away as speech resumed: {sum(w.get('discarded', 0) for w in falls)}"
        )
        written = [w for w in falls if w.get("prefill")]
        if written:
            took = {k: sum(w["prefill"] == k for w in written) for k in ("held", "moved", "none")}
            console.print(
                f"[{config}] answers the LLM wrote: {len(written)}; llm prefills sent: "
                f"{sum(w.get('prefills_sent', 0) for w in falls)} (all turns); the stage found its prompt prefilled "
                f"in place {took['held']}, moved from Redis {took['moved']}, not at all {took['none']}; prompt "
                f"tokens already evaluated, median: "
                f"{statistics.median([w.get('cached_tokens') or 0 for w in written]):.0f} of "
                f"{statistics.median([w.get('prompt_tokens') or 0 for w in written]):.0f}"
            )
        with_audio = sorted((r for r in live if r.get("first_audio_s") is not None), key=lambda r: r["first_audio_s"])
        if with_audio:
            mid = with_audio[len(with_audio) // 2]
            w = mid.get("waterfall") or {}
            console.print(
                f"[{config}] median turn ({mid['id']}, {mid['lang']}, {mid['speech_s']} s of speech), seconds from "
                f"the last voiced sample: speech_stopped {fmt(mid['speech_stopped_s'])} (endpoint silence + VAD) | "
                f"then from the endpoint: transcript in hand {fmt(w.get('heard_wait'))} (asr stage "
                f"{fmt(w.get('asr'))}, started at the pause: {w.get('speculative')}) | turn recorded + sent "
                f"{fmt(w.get('turn_made'))} | rag {fmt(w.get('rag'))} | answer {fmt(w.get('answer'))} | "
                f"first text {fmt(w.get('gateway_first_text'))} | first clip + relay → first audio "
                f"{fmt(w.get('gateway_first_audio'))}; client saw first audio at {fmt(mid['first_audio_s'])}"
            )
    console.print(f"CPU: {cpu:.2f} cores busy on average over the measured turns (all stack processes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--en", type=int, default=20, help="English questions")
    ap.add_argument("--zh", type=int, default=10, help="Chinese questions")
    ap.add_argument("--json", help="write every turn's figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary stack directory")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
