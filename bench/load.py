"""Load: REST turns from 1, 4, 8 and 16 concurrent clients with one and two processes per pool, then a soak of
concurrent live sessions over both WebSocket protocols, on a private stack this script starts itself. Every
connection is to 127.0.0.1; every loop is bounded in count and time, and the run stops by itself. Prints figures;
asserts none.

    python bench/load.py                                  # the whole run (about 30 min on 2 cores, at most ~40)
    python bench/load.py --clients 1,4 --procs 1 --live-minutes 1 --live-sessions 4   # a quick subset (~4 min)
    python bench/load.py --phases live --live-minutes 10 --json /tmp/load.json           # the soak alone

The stack is bench/consultation.py's (private to the run, removed at exit, also on Ctrl-C or an error): a temporary
data dir and SQLite database, a redis-server on a free port, a Chroma server, the API (`medvoice serve`) and one
worker node per pool (asr, live, rag, llm, tts) started with --concurrency P: P processes per pool. The knowledge
base is consultation.py's (topic documents about what the clips say, MedQuAD and Chinese distractors), ingested
through the rag pool. Speech: the recordings of ../shared/eval-data/speech (English and Chinese); the soak adds
one short phrase per session spoken by the product's own voices (see "cross-talk" below). Each client and each
live session signs in as its own clinician (the API holds at most MEDVOICE_LIVE_MAX_SESSIONS_PER_USER sessions
per user, and 20 clinicians is what the soak stands for).

Phase `rest` (--procs, default 1,2; --clients, default 1,4,8,16): for each processes-per-pool value the pools are
started afresh (models loaded, /readyz ready) and warmed with P turns at once, then for each client count C every
client uploads ceil(--turns / C) clips one after another (a fresh consultation each: POST
/v1/consultations/{id}/turns, then its SSE stream to the end), no new upload after --step-s. Per step:
- upload → first `audio` event and → terminal event, p50 / p95 over the turns that finished `done`;
- throughput: turns done per minute, from the first upload to the last terminal event;
- errors by kind: `HTTP <status> <code>` for a refused upload, `turn <status>: <stage>: <code>` for a turn that
  ended otherwise than done, `sse timeout`, or the client's exception;
- memory: /proc sampled every 0.5 s during the step for every process of the stack (each worker node's parent and
  its pool children): the peak RSS of each node (parent + children) and, at the instant their sum peaked, the
  sum over the API and the pools, against the goal of 3.5 GB; PSS (shared pages split between the processes
  that map them, so a Celery parent and its forked children are not counted twice) summed the same way.
The processes-per-pool value that the soak uses runs last, so its workers stay up for the soak.

Phase `live` (--live-sessions, default 20; --live-minutes, default 10): half the sessions speak OpenAI Realtime
(`/v1/realtime`, GA shape, server VAD, `create_response: false`: each utterance is transcribed and nothing
answered, the fair soak for finals), half FunASR 2pass (`/v1/asr/funasr` with the session's JWT); half of each
English, half Chinese (the session's language set). Each session streams its own sequence at real-time pace (100
ms frames at 24 kHz for Realtime, 60 ms at 16 kHz for FunASR, through tests/live/funasr_client.py): a recording of
its language, then its own phrase, then the next recording, ... each followed by --live-gap-s of silence,
recordings rotated by a per-session offset and each session starting after its own lead silence, so that sessions
side by side say different things at different moments. No new clip starts after --live-minutes; then each
session waits at most --live-drain-s for what is still owed (FunASR: `is_speaking: false` with `is_end`).
- every final delivered: each final is placed on the clip it transcribes by the session's own audio clock
  (Realtime: the utterance's `speech_stopped.audio_end_ms`; FunASR: the end of the final's last `timestamp`
  pair), and the clips that got none are counted. Realtime also checks its own bookkeeping: each committed item
  gets exactly one `...input_audio_transcription.completed` (or `.failed`): `missing` and `dup` count the items
  that got none or more than one. FunASR: every reply carries the session's own `wav_name`; error replies and
  closes are counted.
- no session's text in another's (cross-talk): every session has a code word of its own (English: "Session code
  word <word>. I repeat, <word>." in the English voice; Chinese: "本次会话的口令是<词>。我再说一遍，<词>。" in the
  Mandarin voice); a final of session A that contains session B's code word is a leak. The code words are
  distinct, none is part of another or of any recording's text, so a leak cannot come from ASR error; how often a
  session's own word is heard is printed beside it (the check is only as good as that rate). Also counted, as a
  heuristic: finals (≥ 4 tokens) whose words match another clip's text well (≥ 80 % of their tokens) and the clip
  they were placed on poorly (< 50 %); and finals that repeat the previous final of the session whole.
- end → final: from the send of the frame holding a clip's last voiced sample to the last final placed on that
  clip, p50 / p95 over all clips, and p95 over the first and the last minute (a backlog shows as growth).
- memory over time: the same /proc sampling, the sum over the API and the pools every 10 s: at the start, its
  peak, at the end, and the slope (MB/min; a leak shows as a steady climb).
- admission: every 15 s a new session of each protocol tries to join (and leaves at once), beside the lag the
  API reports (`medvoice_live_final_lag_seconds`): admitted, or refused with its close code and reason.
Clips without speech detected at all (VAD) and utterances cut in two (a pause longer than the endpoint) are
normal speech handling, reported as counts, not failures.

Then the overload run (--overload-minutes, default 2; 0 skips it): the same sessions with --overload-gap-s (2 s)
of silence after each clip, more speech than one live process transcribes. What it shows: the pool falls behind
(partials stop and finals are decoded once above MEDVOICE_LIVE_BEHIND_LAG_S), new sessions are refused (1013, the
lag in the reason) once the lag passes MEDVOICE_LIVE_ADMIT_MAX_LAG_S, and the sessions already open still get
every final, late; memory over it as for the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import concurrent.futures as cf
import contextlib
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from consultation import (  # noqa: E402
    BENCH_PASSWORD,
    SPEECH,
    Api,
    Stack,
    UploadError,
    descendants,
    describe_models,
    fmt,
    ingest,
    leave_after,
    load_clips,
    log,
    make_users,
    pct,
    pss_mb,
    rss_mb,
    show_worker_logs,
    tear_down,
    token,
)
from live_asr import FRAME_MS, load_files, norm  # noqa: E402
from tests.live import funasr_client as fc  # noqa: E402
from voice_latency import CHUNK_S, last_voiced_s, speak  # noqa: E402
from voice_latency import RATE as RT_RATE  # noqa: E402

PHASES = ("rest", "live")
MEMORY_GOAL_MB = 3.5 * 1024
FA_RATE = 16000
# One code word per session and language: distinct, none inside another or in any recording's reference text, and
# each heard right by Whisper base in its phrase spoken by the product's voice (checked: 长颈鹿, 葡萄酒 were not).
CODEWORDS = {
    "en": [
        "pineapple",
        "volcano",
        "saxophone",
        "giraffe",
        "lighthouse",
        "umbrella",
        "kangaroo",
        "tornado",
        "helicopter",
        "avocado",
        "penguin",
        "trumpet",
        "cathedral",
        "dinosaur",
        "telescope",
        "butterfly",
        "submarine",
        "chocolate",
        "marathon",
        "broccoli",
        "accordion",
        "snowflake",
        "cactus",
        "waterfall",
    ],  # fmt: skip
    "zh": [
        "大熊猫",
        "巧克力",
        "电冰箱",
        "自行车",
        "图书馆",
        "火车站",
        "动物园",
        "足球场",
        "照相机",
        "圣诞节",
        "洗衣机",
        "羽毛球",
        "救护车",
        "飞行员",
        "太阳能",
        "红绿灯",
        "棒棒糖",
        "电视机",
        "飞机场",
        "消防车",
        "高速公路",
        "太平洋",
        "摩天轮",
        "冰淇淋",
    ],  # fmt: skip
}
PHRASE = {
    "en": "Session code word {w}. I repeat, {w}.",
    "zh": "本次会话的口令是{w}。我再说一遍，{w}。",
}


# ---------------------------------------------------------------------------------------------------
# memory: every process of the stack, sampled from /proc
# ---------------------------------------------------------------------------------------------------
def node_label(name: str) -> str:
    """api / redis / chroma, or the pool of a worker node (`worker-asr-1a2b` → asr)."""
    return name.split("-")[1] if name.startswith("worker-") else name


class Sampler:
    """Peak RSS of each node of the stack (its process and every descendant: a worker's pool children) and of
    each process, and the sum over the API and the pools at the instant it peaked; PSS summed likewise (read
    less often: smaps_rollup walks the page tables). Optionally the sum every `series_s`, for the soak."""

    def __init__(self, stack: Stack, interval_s: float = 0.5, series_s: float | None = None) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.series_s = series_s
        self.peak_node: dict[str, float] = {}
        self.peak_proc: dict[tuple[str, int], dict[str, Any]] = {}
        self.peak_sum = 0.0
        self.at_peak: dict[str, float] = {}
        self.peak_pss = 0.0
        self.series: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tick(self, with_pss: bool) -> None:
        nodes: dict[str, float] = {}
        pss = 0.0
        for name, proc in list(self.stack.procs.items()):
            if proc.poll() is not None:
                continue
            label = node_label(name)
            pids = [proc.pid, *descendants(proc.pid)]
            total = 0.0
            for i, pid in enumerate(pids):
                mb = rss_mb(pid)
                if mb != mb:  # gone since it was listed
                    continue
                total += mb
                key = (label, pid)
                row = self.peak_proc.setdefault(
                    key, {"node": label, "pid": pid, "role": "parent" if i == 0 else "child"}
                )
                row["rss_mb"] = max(row.get("rss_mb", 0.0), mb)
                if with_pss and label not in ("redis", "chroma"):
                    p = pss_mb(pid)
                    pss += p if p == p else 0.0
            nodes[label] = nodes.get(label, 0.0) + total
        for label, mb in nodes.items():
            self.peak_node[label] = max(self.peak_node.get(label, 0.0), mb)
        total = sum(mb for label, mb in nodes.items() if label not in ("redis", "chroma"))
        if total > self.peak_sum:
            self.peak_sum, self.at_peak = total, dict(nodes)
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)
        t = time.monotonic() - self._t0
        if self.series_s and (not self.series or t - self.series[-1]["t_s"] >= self.series_s):
            self.series.append(
                {"t_s": round(t, 1), "sum_mb": round(total, 1), **{k: round(v) for k, v in nodes.items()}}
            )

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a process that ended between listing and reading
                self._tick(with_pss=n % 4 == 0)
            n += 1
            self._stop.wait(self.interval_s)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._tick(with_pss=True)  # the state at the end, for the series
        return {
            "peak_sum_mb": self.peak_sum,
            "peak_pss_sum_mb": self.peak_pss,
            "at_peak_mb": self.at_peak,
            "peak_by_node_mb": self.peak_node,
            "processes": sorted(self.peak_proc.values(), key=lambda r: (r["node"], r["role"] != "parent", r["pid"])),
            "series": self.series,
            "seconds": time.monotonic() - self._t0,
        }


# ---------------------------------------------------------------------------------------------------
# phase rest: concurrent REST clients
# ---------------------------------------------------------------------------------------------------
def error_key(rec: dict[str, Any]) -> str | None:
    """None for a turn that finished done; else what went wrong, short enough to tally."""
    if rec.get("kind_error"):
        return rec["kind_error"]
    if rec.get("end_event") == "timeout":
        return "sse timeout"
    if rec.get("status") == "done":
        return None
    err = str(rec.get("error") or "")
    m = re.match(r"^\s*(\w+): (\w+)", err)
    return f"turn {rec.get('status')}: {m.group(0).strip() if m else err[:60]}"


def one_turn(api: Api, clip: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        rec = api.turn(clip)
    except UploadError as exc:
        rec = {"status": "refused", "kind_error": f"HTTP {exc.status} {exc.code or ''}".strip(), "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - counted, the client goes on
        rec = {"status": "exception", "kind_error": type(exc).__name__, "error": str(exc)[:300]}
    rec.update(clip=clip["file"], started=t0, finished=time.perf_counter())
    return rec


def rest_step(
    stack: Stack,
    base: str,
    tokens: list[str],
    clips: list[dict[str, Any]],
    clients: int,
    per_client: int,
    step_s: float,
) -> dict[str, Any]:
    deadline = time.perf_counter() + step_s

    def client(i: int) -> list[dict[str, Any]]:
        api = Api(base, tokens[i % len(tokens)])
        recs = []
        try:
            for k in range(per_client):
                if time.perf_counter() > deadline:
                    break  # bounded in time as well as in count
                rec = one_turn(api, clips[(i + k * clients) % len(clips)])
                rec["client"] = i
                recs.append(rec)
        finally:
            api.close()
        return recs

    sampler = Sampler(stack)
    with cf.ThreadPoolExecutor(clients) as ex:
        recs = [r for rs in ex.map(client, range(clients)) for r in rs]
    mem = sampler.stop()
    done = [r for r in recs if error_key(r) is None]
    span = max(r["finished"] for r in recs) - min(r["started"] for r in recs) if recs else float("nan")
    first_audio = [r.get("client_first_audio_s") for r in done]
    finished = [r.get("client_done_s") for r in done]
    t0 = min((r["started"] for r in recs), default=0.0)
    for r in recs:
        r["started"], r["finished"] = round(r["started"] - t0, 3), round(r["finished"] - t0, 3)
    return {
        "clients": clients,
        "turns_per_client": per_client,
        "turns": len(recs),
        "done": len(done),
        "no_audio": sum(r.get("client_first_audio_s") is None for r in done),
        "errors": dict(Counter(k for r in recs if (k := error_key(r)) is not None)),
        "elapsed_s": span,
        "turns_per_min": 60 * len(done) / span if span and span > 0 else float("nan"),
        "first_audio_p50_s": pct(first_audio, 50),
        "first_audio_p95_s": pct(first_audio, 95),
        "done_p50_s": pct(finished, 50),
        "done_p95_s": pct(finished, 95),
        "sse_reconnects": sum(r.get("sse_reconnects") or 0 for r in recs),
        "memory": mem,
        "records": recs,
    }


def rest_phase(
    stack: Stack, base: str, tokens: list[str], clips: list[dict[str, Any]], procs: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    steps = []

    def warm(i: int) -> None:
        api = Api(base, tokens[i % len(tokens)])
        try:
            one_turn(api, clips[i % len(clips)])
        finally:
            api.close()

    with cf.ThreadPoolExecutor(procs) as ex:  # first calls load lazily: not what a clinician meets
        log(f"  warm-up: {procs} turn(s) at once")
        list(ex.map(warm, range(procs)))
    for clients in args.client_levels:
        per = max(2, math.ceil(args.turns / clients))
        log(f"  {clients} client(s) × up to {per} turn(s), no new upload after {args.step_s:.0f} s")
        step = rest_step(stack, base, tokens, clips, clients, per, args.step_s)
        step["procs"] = procs
        steps.append(step)
        m = step["memory"]
        log(
            f"    {step['done']}/{step['turns']} done in {fmt(step['elapsed_s'], 0)} s, "
            f"{fmt(step['turns_per_min'], 1)} turns/min, first audio p50 {fmt(step['first_audio_p50_s'])} s, "
            f"errors {step['errors'] or 0}, RSS pools+API {m['peak_sum_mb']:.0f} MB"
        )
    return steps


# ---------------------------------------------------------------------------------------------------
# phase live: the soak
# ---------------------------------------------------------------------------------------------------
def resample(samples: Any, rate: int, to: int) -> Any:
    import numpy as np
    import soxr

    if rate == to:
        return samples.astype(np.int16)
    return soxr.resample(samples, rate, to).astype(np.int16)


def source(name: str, kind: str, lang: str, ref: str, samples: Any, rate: int) -> dict[str, Any]:
    """A clip ready for both protocols: PCM16 at 16 kHz (FunASR) and 24 kHz (Realtime)."""
    return {
        "name": name,
        "kind": kind,
        "lang": lang,
        "ref": ref,
        "voiced_s": last_voiced_s(samples, rate),
        "pcm": {r: resample(samples, rate, r).astype("<i2").tobytes() for r in (FA_RATE, RT_RATE)},
    }


def plan_sessions(n: int, files: list[dict[str, Any]], codes: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Session i: Realtime on even i, FunASR on odd; English on i // 2 even, Chinese on odd. Its recordings start
    at an offset of its own and alternate with its code-word phrase (when there is one)."""
    real: dict[str, list[dict[str, Any]]] = {"en": [], "zh": []}
    for f in files:
        real[f["lang"]].append(source(f["file"], "clip", f["lang"], f["ref"], f["samples"], f["rate"]))
    out = []
    for i in range(n):
        protocol = "realtime" if i % 2 == 0 else "funasr"
        lang = "en" if (i // 2) % 2 == 0 else "zh"
        clips = real[lang]
        offset = (2 * (i // 4) + i % 2) % len(clips)
        seq: list[dict[str, Any]] = []
        for k in range(len(clips)):
            seq.append(clips[(offset + k) % len(clips)])
            if i in codes:
                seq.append(codes[i])
        out.append(
            {
                "index": i,
                "name": f"s{i:02d}-{protocol}-{lang}",
                "protocol": protocol,
                "lang": lang,
                "codeword": codes[i]["word"] if i in codes else None,
                "sequence": seq,
                "lead_s": 0.5 + (i * 0.37) % 3.0,  # endpoints of different sessions fall at different moments
            }
        )
    return out


def make_codes(n: int, data_dir: Path) -> dict[int, dict[str, Any]]:
    """Each session's phrase in the product's voice of its language (tts.synthesize on the tts pool)."""
    import numpy as np

    codes: dict[int, dict[str, Any]] = {}
    used = {"en": 0, "zh": 0}
    for i in range(n):
        lang = "en" if (i // 2) % 2 == 0 else "zh"
        word = CODEWORDS[lang][used[lang]]
        used[lang] += 1
        text = PHRASE[lang].format(w=word)
        try:
            spoken = speak(data_dir, text, lang)
        except Exception as exc:  # noqa: BLE001 - the soak runs without its cross-talk words, and says so
            log(f"  no code-word phrase for session {i} ({type(exc).__name__}: {exc}); cross-talk check off for it")
            continue
        samples = np.frombuffer(spoken["pcm"], dtype="<i2")
        codes[i] = {**source(f"code:{word}", "code", lang, text, samples, RT_RATE), "word": word}
    return codes


class Schedule:
    """A session's audio, frame by frame, at one rate: lead silence, then each clip of its sequence (cycled)
    followed by the gap. Records where each clip lies on the session's audio clock and when the frame holding
    its last voiced sample went out. No clip starts after the deadline."""

    def __init__(self, sess: dict[str, Any], rate: int, frame_s: float, gap_s: float, deadline: float) -> None:
        self.sess, self.rate, self.frame_s, self.gap_s, self.deadline = sess, rate, frame_s, gap_s, deadline
        self.step = int(rate * frame_s) * 2
        self.frame_ms = frame_s * 1000
        self.slots: list[dict[str, Any]] = []
        self.silence = bytes(self.step)
        self._frames: dict[str, list[bytes]] = {}

    def _clip_frames(self, src: dict[str, Any]) -> list[bytes]:
        if src["name"] not in self._frames:  # sliced once; every repeat sends the same bytes objects
            pcm = src["pcm"][self.rate]
            pcm += bytes(-len(pcm) % self.step)  # whole frames keep the clock exact
            self._frames[src["name"]] = [pcm[i : i + self.step] for i in range(0, len(pcm), self.step)]
        return self._frames[src["name"]]

    def frames(self) -> Any:
        pos = 0
        for _ in range(round(self.sess["lead_s"] / self.frame_s)):
            yield self.silence
            pos += 1
        seq = self.sess["sequence"]
        for k in range(10_000):  # bounded: the deadline ends it long before
            if time.monotonic() >= self.deadline:
                break
            src = seq[k % len(seq)]
            frames = self._clip_frames(src)
            voiced = min(int(src["voiced_s"] / self.frame_s), len(frames) - 1)
            slot = {
                "source": src["name"],
                "kind": src["kind"],
                "start_ms": pos * self.frame_ms,
                "voiced_end_ms": pos * self.frame_ms + src["voiced_s"] * 1000,
                "voiced_sent_at": None,
            }
            self.slots.append(slot)
            for j, frame in enumerate(frames):
                if j == voiced:
                    slot["voiced_sent_at"] = time.perf_counter()  # the caller sends it right after this
                yield frame
            pos += len(frames)
            for _ in range(round(self.gap_s / self.frame_s)):
                yield self.silence
                pos += 1


async def realtime_session(
    ws_url: str, tok: str, sess: dict[str, Any], sched: Schedule, drain_s: float, out: dict[str, Any]
) -> None:
    """One OpenAI Realtime session (voice_latency.py's client: raw websockets, GA events), transcription only."""
    import websockets

    items: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    out.update(items=items, order=order, errors=[], partials=0)
    async with websockets.connect(
        ws_url, additional_headers={"Authorization": f"Bearer {tok}"}, max_size=None, open_timeout=60
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "transcription": {"language": sess["lang"]},
                                "turn_detection": {"type": "server_vad", "create_response": False},
                            }
                        },
                    },
                }
            )
        )

        def item(item_id: Any) -> dict[str, Any]:
            return items.setdefault(str(item_id), {"completed": [], "failed": []})

        async def receive() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    ev = json.loads(raw)
                    t = time.perf_counter()
                    kind = ev.get("type")
                    if kind == "input_audio_buffer.speech_stopped":
                        item(ev.get("item_id"))["end_ms"] = ev.get("audio_end_ms")
                    elif kind == "input_audio_buffer.committed":
                        item(ev.get("item_id"))["committed"] = True
                        order.append(str(ev.get("item_id")))
                    elif kind == "conversation.item.input_audio_transcription.completed":
                        item(ev.get("item_id"))["completed"].append({"text": ev.get("transcript") or "", "at": t})
                    elif kind == "conversation.item.input_audio_transcription.failed":
                        item(ev.get("item_id"))["failed"].append((ev.get("error") or {}).get("code"))
                    elif kind == "conversation.item.input_audio_transcription.delta":
                        out["partials"] += 1
                    elif kind == "error":
                        out["errors"].append((ev.get("error") or {}).get("code"))
            out["closed"] = f"{ws.close_code} {ws.close_reason or ''}".strip()

        reader = asyncio.create_task(receive())
        t0 = time.monotonic()
        for i, chunk in enumerate(sched.frames()):
            if reader.done():
                break  # the server closed the session
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * CHUNK_S - time.monotonic()))
        await asyncio.sleep(1.0)  # the last endpoint's events, on a busy API
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and not reader.done():
            if all(items[i]["completed"] or items[i]["failed"] for i in order):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a duplicate would arrive about now
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def funasr_session(
    ws_url: str, tok: str, sess: dict[str, Any], sched: Schedule, drain_s: float, out: dict[str, Any]
) -> None:
    """One FunASR 2pass session through tests/live/funasr_client.py (as bench/live_asr.py), the whole schedule
    as one stream, then `is_speaking: false` with `is_end`."""
    first = fc.config("2pass", wav_name=sess["name"], rate=FA_RATE, svs_lang=sess["lang"])
    res = await fc.run(
        ws_url,
        first,
        sched.frames(),
        frame_s=FRAME_MS / 1000,
        end={"is_speaking": False, "is_end": True},
        headers={"Authorization": f"Bearer {tok}"},
        timeout_s=drain_s,
    )
    out["result"] = res


def final_end_ms(msg: dict[str, Any]) -> float | None:
    with contextlib.suppress(ValueError, TypeError, IndexError):
        stamps = json.loads(msg.get("timestamp") or "[]")
        if stamps:
            return float(stamps[-1][1])
    return None


def collect(sess: dict[str, Any], sched: Schedule, out: dict[str, Any]) -> dict[str, Any]:
    """The session's finals (text, arrival, end on its audio clock) and its own bookkeeping figures."""
    rec: dict[str, Any] = {k: sess[k] for k in ("name", "protocol", "lang", "codeword")} | {
        "slots": sched.slots,
        "exception": out.get("exception"),
    }
    finals: list[dict[str, Any]] = []
    if sess["protocol"] == "realtime":
        items, order = out.get("items", {}), out.get("order", [])
        for item_id in order:
            it = items[item_id]
            for c in it["completed"]:
                finals.append({"text": c["text"], "at": c["at"], "end_ms": it.get("end_ms"), "item": item_id})
        rec.update(
            utterances=len(order),
            one_final=sum(len(items[i]["completed"]) + len(items[i]["failed"]) == 1 for i in order),
            missing=sum(not items[i]["completed"] and not items[i]["failed"] for i in order),
            dup=sum(len(items[i]["completed"]) + len(items[i]["failed"]) > 1 for i in order),
            failed=sum(bool(items[i]["failed"]) for i in order),
            errors=list(out.get("errors", [])) + [c for i in order for c in items[i]["failed"]],
            partials=out.get("partials", 0),
            closed=out.get("closed"),
        )
    else:
        res = out.get("result")
        msgs = list(zip(res.messages, res.received_at)) if res else []
        for m, t in msgs:
            if m.get("mode") == "2pass-offline" and "error" not in m and (m.get("text") or "").strip():
                finals.append({"text": m["text"], "at": t, "end_ms": final_end_ms(m)})
        ends = [f["end_ms"] for f in finals if f["end_ms"] is not None]
        rec.update(
            utterances=None,
            one_final=None,
            missing=None,
            dup=sum(b <= a for a, b in zip(ends, ends[1:])),  # a final again over audio already finalised
            failed=sum("error" in m for m, _ in msgs),
            errors=[m.get("code") for m, _ in msgs if "error" in m],
            partials=sum(m.get("mode") == "2pass-online" for m, _ in msgs),
            wav_names_ok=all(m.get("wav_name") == sess["name"] for m, _ in msgs),
            got_end=bool(msgs and msgs[-1][0].get("is_end")),
            closed=f"{res.close_code} {res.close_reason}".strip() if res and res.close_code else None,
        )
    rec["finals"] = finals
    return rec


def has_word(text: str, word: str, lang: str) -> bool:
    if lang == "zh":
        return word in "".join(norm(text, "zh"))
    return re.search(rf"\b{re.escape(word)}\b", " ".join(norm(text, "en"))) is not None


def analyse(recs: list[dict[str, Any]], plans: list[dict[str, Any]], t_start: float) -> None:
    """Place finals on clips, time them, look for other sessions' words; in place, per session."""
    refs: dict[str, set[str]] = {}  # each clip's reference tokens
    for p in plans:
        for src in p["sequence"]:
            refs[src["name"]] = set(norm(src["ref"], src["lang"]))
    words = [(p["name"], p["codeword"], p["lang"]) for p in plans if p["codeword"]]
    for rec in recs:
        lang = rec["lang"]
        slots = rec["slots"]
        starts = [s["start_ms"] for s in slots]
        sent = [s["voiced_sent_at"] or math.inf for s in slots]
        for s in slots:
            s["finals"] = []
        for f in rec["finals"]:
            if f["end_ms"] is not None and slots:
                k = bisect.bisect_right(starts, f["end_ms"] - 1) - 1
            else:  # no clock on it: the latest clip whose end had been sent when it arrived
                k = bisect.bisect_right(sent, f["at"]) - 1
            f["slot"] = k
            if 0 <= k < len(slots):
                slots[k]["finals"].append(f)
        # end → final per clip: the last final placed on it
        lat = []
        for s in slots:
            if s["finals"] and s["voiced_sent_at"]:
                at = max(f["at"] for f in s["finals"])
                lat.append({"t_s": s["voiced_sent_at"] - t_start, "latency_s": at - s["voiced_sent_at"]})
        rec["latency"] = lat
        rec["clips"] = len(slots)
        rec["clips_without_final"] = sum(not s["finals"] for s in slots)
        rec["clips_split"] = sum(len(s["finals"]) > 1 for s in slots)
        # cross-talk: other sessions' code words; text that matches another clip far better than its own
        rec["leaks"] = [
            {"from": other, "word": w, "text": f["text"][:120]}
            for f in rec["finals"]
            for other, w, wlang in words
            if other != rec["name"] and has_word(f["text"], w, wlang)
        ]
        code_slots = [s for s in slots if s["kind"] == "code"]
        rec["own_word_heard"] = (
            sum(any(has_word(f["text"], rec["codeword"], lang) for f in s["finals"]) for s in code_slots),
            len(code_slots),
        )
        foreign, repeats = [], []
        prev: list[str] = []
        prev_text = ""
        for f in sorted(rec["finals"], key=lambda f: f["at"]):
            toks = norm(f["text"], lang)
            if len(prev) >= 4 and " ".join(prev) in " ".join(toks):
                repeats.append({"previous": prev_text[:120], "text": f["text"][:120]})
            prev, prev_text = toks, f["text"]
            if len(toks) < 4 or not (0 <= f["slot"] < len(slots)):
                continue
            own = slots[f["slot"]]["source"]

            def share(name: str, toks: list[str] = toks) -> float:
                return sum(t in refs[name] for t in toks) / len(toks)

            best = max(refs, key=share)
            if best != own and share(best) >= 0.8 and share(own) < 0.5:
                foreign.append({"slot": own, "best": best, "text": f["text"][:120]})
        rec["foreign"] = foreign
        rec["repeats"] = repeats
        rec["repeated"] = len(repeats)
        for f in rec["finals"]:
            f["at"] = round(f["at"] - t_start, 3)
        for s in slots:
            s["voiced_sent_at"] = round(s["voiced_sent_at"] - t_start, 3) if s["voiced_sent_at"] else None
            s["finals"] = len(s["finals"])


async def soak(
    base: str,
    tokens: list[str],
    plans: list[dict[str, Any]],
    gap_s: float,
    minutes: float,
    drain_s: float,
    probe_token: str | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    ws = base.replace("http://", "ws://")
    deadline = time.monotonic() + minutes * 60
    tasks, scheds, outs = [], [], []
    for p, tok in zip(plans, tokens):
        out: dict[str, Any] = {}  # filled as the session goes: what it got survives its failure
        if p["protocol"] == "realtime":
            sched = Schedule(p, RT_RATE, CHUNK_S, gap_s, deadline)
            coro = realtime_session(ws + "/v1/realtime", tok, p, sched, drain_s, out)
        else:
            sched = Schedule(p, FA_RATE, FRAME_MS / 1000, gap_s, deadline)
            coro = funasr_session(ws + "/v1/asr/funasr", tok, p, sched, drain_s, out)
        scheds.append(sched)
        outs.append(out)
        tasks.append(asyncio.create_task(coro))
    probes: list[dict[str, Any]] = []
    prober = asyncio.create_task(probe(base, probe_token, deadline, probes)) if probe_token else None
    # Each session ends by itself (deadline, then the drain); this bounds a session that would not.
    bound = minutes * 60 + 60 + drain_s + 30
    done, pending = await asyncio.wait(tasks, timeout=bound)
    for t in pending:
        t.cancel()
    for t, out in zip(tasks, outs):
        if t in pending:
            out["exception"] = f"still running after {bound:.0f} s: cancelled"
        elif t.exception() is not None:
            out["exception"] = f"{type(t.exception()).__name__}: {t.exception()}"[:300]
    with contextlib.suppress(BaseException):
        await asyncio.gather(*pending, *([prober] if prober else []), return_exceptions=True)
    return [collect(p, s, o) for p, s, o in zip(plans, scheds, outs)], probes


PROBE_EVERY_S = 15.0


def scraped_lag_s(base: str) -> float | None:
    """The API's medvoice_live_final_lag_seconds (its /metrics answers loopback)."""
    import httpx

    with contextlib.suppress(Exception):
        for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
            if line.startswith("medvoice_live_final_lag_seconds "):
                return float(line.split()[-1])
    return None


async def probe(base: str, tok: str, deadline: float, out: list[dict[str, Any]]) -> None:
    """While the sessions speak: every PROBE_EVERY_S a new session of each protocol tries to join (admitted: it
    leaves at once; refused: the close code and reason), beside the lag the API reports."""
    import websockets

    ws = base.replace("http://", "ws://")
    auth = {"Authorization": f"Bearer {tok}"}
    t0 = time.monotonic()

    async def one(protocol: str) -> dict[str, Any]:
        url = ws + ("/v1/realtime" if protocol == "realtime" else "/v1/asr/funasr")
        extra = {"subprotocols": ["binary"]} if protocol == "funasr" else {}
        try:
            async with websockets.connect(url, additional_headers=auth, open_timeout=30, **extra) as conn:
                if protocol == "funasr":
                    await conn.send(json.dumps(fc.config("2pass", wav_name="probe", rate=FA_RATE)))
                try:
                    first = json.loads(await asyncio.wait_for(conn.recv(), 3.0))
                except TimeoutError:
                    return {"admitted": True}  # FunASR says nothing until there is audio
                if first.get("type") == "session.created":
                    return {"admitted": True}
                with contextlib.suppress(TimeoutError):  # a refusal: FunASR's error reply, then the close
                    await asyncio.wait_for(conn.wait_closed(), 3.0)
                return {"admitted": False, "code": conn.close_code, "reason": conn.close_reason or str(first)[:200]}
        except websockets.ConnectionClosed as exc:
            return {
                "admitted": False,
                "code": exc.rcvd.code if exc.rcvd else None,
                "reason": exc.rcvd.reason if exc.rcvd else "",
            }
        except Exception as exc:  # noqa: BLE001 - recorded, the soak goes on
            return {"admitted": False, "error": f"{type(exc).__name__}: {exc}"[:200]}

    while time.monotonic() + PROBE_EVERY_S < deadline:
        await asyncio.sleep(PROBE_EVERY_S)
        lag = await asyncio.to_thread(scraped_lag_s, base)
        for protocol in ("realtime", "funasr"):
            out.append({"t_s": time.monotonic() - t0, "protocol": protocol, "lag_s": lag, **await one(protocol)})


def slope_mb_per_min(series: list[dict[str, Any]]) -> float:
    """Least-squares slope of the API + pools RSS over the soak."""
    xs = [s["t_s"] / 60 for s in series]
    ys = [s["sum_mb"] for s in series]
    if len(xs) < 3:
        return float("nan")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def live_phase(
    stack: Stack,
    base: str,
    tokens: list[str],
    plans: list[dict[str, Any]],
    gap_s: float,
    minutes: float,
    args: argparse.Namespace,
    probe_token: str | None = None,
) -> dict[str, Any]:
    log(
        f"  {len(plans)} live sessions ({sum(p['protocol'] == 'realtime' for p in plans)} Realtime, "
        f"{sum(p['protocol'] == 'funasr' for p in plans)} FunASR) for {minutes:g} min, gap {gap_s:g} s"
    )
    # The offered load: the share of each session's audio that is speech, summed over the sessions.
    shares = []
    for p in plans:
        speech = sum(src["voiced_s"] for src in p["sequence"])
        audio = sum(len(src["pcm"][FA_RATE]) / 2 / FA_RATE + gap_s for src in p["sequence"])
        shares.append(speech / audio)
    sampler = Sampler(stack, series_s=10)
    t_start = time.perf_counter()
    recs, probes = asyncio.run(soak(base, tokens, plans, gap_s, minutes, args.live_drain_s, probe_token))
    wall = time.perf_counter() - t_start
    mem = sampler.stop()
    analyse(recs, plans, t_start)
    series = mem["series"]
    return {
        "gap_s": gap_s,
        "minutes": minutes,
        "sessions": recs,
        "probes": probes,
        "wall_s": wall,
        "memory": mem,
        "rss_start_mb": series[0]["sum_mb"] if series else float("nan"),
        "rss_end_mb": series[-1]["sum_mb"] if series else float("nan"),
        "rss_slope_mb_per_min": slope_mb_per_min(series),
        "codewords": sum(p["codeword"] is not None for p in plans),
        "speech_share": sum(shares) / len(shares),
        "speech_x_realtime": sum(shares),
    }


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
def mem_cells(m: dict[str, Any]) -> list[str]:
    nodes = m["peak_by_node_mb"]
    return [
        f"{m['peak_sum_mb']:.0f} / {m['peak_pss_sum_mb']:.0f}",
        *(fmt(nodes.get(k), 0) for k in ("api", "asr", "live", "rag", "llm", "tts")),
    ]


def live_summary(recs: list[dict[str, Any]], live_minutes: float) -> list[dict[str, Any]]:
    rows = []
    for proto in ("realtime", "funasr"):
        rs = [r for r in recs if r["protocol"] == proto]
        if not rs:
            continue
        lat = [x for r in rs for x in r["latency"]]
        ls = [x["latency_s"] for x in lat]
        first = [x["latency_s"] for x in lat if x["t_s"] < 60]
        last = [x["latency_s"] for x in lat if x["t_s"] >= live_minutes * 60 - 60]
        heard = [r["own_word_heard"] for r in rs]

        def total(key: str, rs: list[dict[str, Any]] = rs) -> int | None:
            vals = [r[key] for r in rs if r.get(key) is not None]
            return sum(vals) if vals else None

        rows.append(
            {
                "protocol": proto,
                "sessions": len(rs),
                "clips": total("clips"),
                "utterances": total("utterances"),
                "finals": sum(len(r["finals"]) for r in rs),
                "one_final": total("one_final"),
                "missing": total("missing"),
                "dup": total("dup"),
                "clips_without_final": total("clips_without_final"),
                "clips_split": total("clips_split"),
                "leaks": sum(len(r["leaks"]) for r in rs),
                "foreign": sum(len(r["foreign"]) for r in rs),
                "repeated": total("repeated"),
                "own_word_heard": (sum(h[0] for h in heard), sum(h[1] for h in heard)),
                "end_to_final_p50_s": pct(ls, 50),
                "end_to_final_p95_s": pct(ls, 95),
                "p95_first_min_s": pct(first, 95),
                "p95_last_min_s": pct(last, 95),
                "errors": dict(Counter(str(c) for r in rs for c in r["errors"])),
                "wav_names_ok": all(r.get("wav_names_ok", True) for r in rs),
                "ended": sum(bool(r.get("got_end")) for r in rs) if proto == "funasr" else None,
                "exceptions": [f"{r['name']}: {r['exception']}" for r in rs if r.get("exception")],
                "closed": [f"{r['name']}: closed by the server {r['closed']}" for r in rs if r.get("closed")],
                "silent": [r["name"] for r in rs if not r["clips"]],
            }
        )
    return rows


def report_live(console: Any, live: dict[str, Any], what: str) -> list[dict[str, Any]]:
    from rich.table import Table

    n = len(live["sessions"])
    rows = live_summary(live["sessions"], live["minutes"])
    t = Table(
        title=f"{what}: {n} sessions × {live['minutes']:g} min, real-time pace (gap {live['gap_s']:g} s); "
        "end → final p50 / p95 s",
        title_justify="left",
    )
    cols = ("protocol", "sessions", "clips", "utterances", "finals", "one final each", "missing / dup")
    cols += ("clips w/o final", "cut in two", "leaks", "foreign / repeated", "own word heard")
    cols += ("end → final", "p95 1st / last min", "errors")
    for col in cols:
        t.add_column(col, justify="right")
    for r in rows:
        heard = r["own_word_heard"]
        t.add_row(
            r["protocol"],
            str(r["sessions"]),
            str(r["clips"]),
            str(r["utterances"] if r["utterances"] is not None else "-"),
            str(r["finals"]),
            f"{r['one_final']}/{r['utterances']}" if r["one_final"] is not None else "-",
            f"{r['missing'] if r['missing'] is not None else '-'} / {r['dup']}",
            str(r["clips_without_final"]),
            str(r["clips_split"]),
            str(r["leaks"]),
            f"{r['foreign']} / {r['repeated']}",
            f"{heard[0]}/{heard[1]}",
            f"{fmt(r['end_to_final_p50_s'])} / {fmt(r['end_to_final_p95_s'])}",
            f"{fmt(r['p95_first_min_s'])} / {fmt(r['p95_last_min_s'])}",
            ", ".join(f"{k} ×{v}" for k, v in r["errors"].items()) or "0",
        )
    console.print(t)
    for r in rows:
        notes = []
        if r["protocol"] == "funasr":
            notes.append(f"wav_name always the session's own: {'yes' if r['wav_names_ok'] else 'NO'}")
            notes.append(f"is_end reply received: {r['ended']}/{r['sessions']}")
        notes += r["exceptions"] + r["closed"]
        if r["silent"]:
            notes.append(
                f"[red]sessions that streamed no clip[/red]: {', '.join(r['silent'])} (see api.log with --keep)"
            )
        if notes:
            console.print(f"{r['protocol']}: " + "; ".join(notes), soft_wrap=True)
    for name, x in [(s["name"], x) for s in live["sessions"] for x in s["repeats"]][:3]:
        console.print(f"  repeat in {name}: {x['previous']!r} then {x['text']!r}", soft_wrap=True)
    leaks = [(s["name"], x) for s in live["sessions"] for x in s["leaks"]][:5]
    foreign = [(s["name"], x) for s in live["sessions"] for x in s["foreign"]][:5]
    for name, x in leaks:
        console.print(f"  [red]leak[/red] in {name}: {x['from']}'s word {x['word']!r}: {x['text']!r}", soft_wrap=True)
    for name, x in foreign:
        console.print(f"  foreign? {name} on {x['slot']}: reads like {x['best']}: {x['text']!r}", soft_wrap=True)
    console.print(
        f"offered load: each session speaks {100 * live['speech_share']:.0f} % of its time (gap "
        f"{live['gap_s']:g} s); together ≈ {live['speech_x_realtime']:.1f}× real time of speech for the live "
        f"pool; code-word phrases: {live['codewords']}/{n} sessions",
        soft_wrap=True,
    )
    m = live["memory"]
    minutes = {}
    for x in m["series"]:
        minutes.setdefault(int(x["t_s"] // 60), x["sum_mb"])
    console.print(
        f"API + pools RSS at each minute of the {what}, MB: " + ", ".join(f"{k}: {v:.0f}" for k, v in minutes.items()),
        soft_wrap=True,
    )
    console.print(
        f"memory over the {what}, API + pools RSS: {fmt(live['rss_start_mb'], 0)} MB at the start, peak "
        f"{m['peak_sum_mb']:.0f} MB (PSS {m['peak_pss_sum_mb']:.0f}), {fmt(live['rss_end_mb'], 0)} MB at the end, "
        f"slope {fmt(live['rss_slope_mb_per_min'], 1)} MB/min; peak by node: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(m["peak_by_node_mb"].items())),
        soft_wrap=True,
    )
    probes = live.get("probes") or []
    if probes:
        admitted = [p for p in probes if p["admitted"]]
        refused = [p for p in probes if not p["admitted"]]
        lags = [p["lag_s"] for p in probes if p["lag_s"] is not None]
        reasons = Counter(f"{p.get('code')} {p.get('reason') or p.get('error') or ''}".strip() for p in refused)
        first = min((p["lag_s"] for p in refused if p["lag_s"] is not None), default=None)
        most = max((p["lag_s"] for p in admitted if p["lag_s"] is not None), default=None)
        console.print(
            f"new sessions while it ran (every {PROBE_EVERY_S:g} s, both protocols): {len(admitted)} admitted, "
            f"{len(refused)} refused; lag reported by the API max {fmt(max(lags, default=None))} s; admitted up to "
            f"lag {fmt(most)} s, refused from lag {fmt(first)} s; "
            + "; ".join(f"{k!r} ×{v}" for k, v in reasons.most_common(3)),
            soft_wrap=True,
        )
    return rows


def report(
    console: Any,
    header: list[str],
    rest: list[dict[str, Any]],
    live: dict[str, Any] | None,
    overload: dict[str, Any] | None,
    args: Any,
) -> Any:
    from rich.table import Table

    for line in header:
        console.print(line, highlight=False, soft_wrap=True)
    if rest:
        t = Table(
            title="REST turns: upload → first `audio` event / → end, p50 / p95 s; peak memory during the step, MB",
            title_justify="left",
        )
        cols = ("procs/pool", "clients", "done", "errors", "turns/min", "→ first audio", "→ end")
        cols += ("RSS / PSS pools+API", "api", "asr", "live", "rag", "llm", "tts")
        for col in cols:
            t.add_column(col, justify="right")
        for s in sorted(rest, key=lambda s: (s["procs"], s["clients"])):
            t.add_row(
                str(s["procs"]),
                str(s["clients"]),
                f"{s['done']}/{s['turns']}",
                ", ".join(f"{k} ×{v}" for k, v in s["errors"].items()) or "0",
                fmt(s["turns_per_min"], 1),
                f"{fmt(s['first_audio_p50_s'])} / {fmt(s['first_audio_p95_s'])}",
                f"{fmt(s['done_p50_s'])} / {fmt(s['done_p95_s'])}",
                *mem_cells(s["memory"]),
            )
        console.print(t)
        worst = max(rest, key=lambda s: s["memory"]["peak_sum_mb"])
        console.print(
            f"memory goal, API + all pools ≤ {MEMORY_GOAL_MB:.0f} MB RSS: peak {worst['memory']['peak_sum_mb']:.0f} MB "
            f"(PSS {worst['memory']['peak_pss_sum_mb']:.0f} MB) at {worst['procs']} process(es) per pool, "
            f"{worst['clients']} clients; RSS counts the pages a Celery parent shares with its children in each, "
            "PSS splits them",
            soft_wrap=True,
        )
        no_audio = sum(s["no_audio"] for s in rest)
        broke = sum(s["sse_reconnects"] for s in rest)
        if no_audio or broke:
            console.print(
                f"done turns without an audio event: {no_audio}; SSE streams resumed: {broke}", soft_wrap=True
            )
    rows = report_live(console, live, "live soak") if live else []
    if overload:
        report_live(console, overload, "overload")
    return rows


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def make_clinicians(db_url: str, n: int, password: str) -> list[str]:
    from app import users as svc
    from workers.core.db import session_scope
    from workers.core.records import Role

    names = [f"bench-load-{i:02d}" for i in range(n)]
    with session_scope(db_url) as db:
        for name in names:
            svc.create_user(db, name, password, Role.clinician)
    return names


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="rest,live", help="comma-separated: rest,live")
    ap.add_argument("--clients", default="1,4,8,16", help="REST: concurrent clients per step")
    ap.add_argument("--procs", default="1,2", help="REST: processes per pool (worker --concurrency)")
    ap.add_argument(
        "--turns", type=int, default=16, help="REST: turns per step; each client makes max(2, ceil(turns/clients))"
    )
    ap.add_argument("--step-s", type=float, default=150.0, help="REST: no new upload after this many seconds of a step")
    ap.add_argument("--max-tokens", type=int, default=96, help="MEDVOICE_CONSULT_MAX_TOKENS (as bench/consultation.py)")
    ap.add_argument("--distractors", type=int, default=40, help="MedQuAD passages (and half as many Chinese)")
    ap.add_argument("--turn-timeout-s", type=float, default=240.0, help="a turn's SSE stream ends (timeout) after this")
    ap.add_argument("--live-sessions", type=int, default=20, help="live: concurrent sessions (half each protocol)")
    ap.add_argument("--live-minutes", type=float, default=10.0, help="live: no new clip starts after this")
    ap.add_argument("--live-gap-s", type=float, default=16.0, help="live: silence after each clip (sets the load)")
    ap.add_argument("--live-drain-s", type=float, default=180.0, help="live: the most a session waits for its finals")
    ap.add_argument("--live-procs", type=int, default=1, help="live: processes per pool during the soak")
    ap.add_argument(
        "--overload-minutes", type=float, default=2.0, help="live: then the same sessions overloading the pool (0: no)"
    )
    ap.add_argument("--overload-gap-s", type=float, default=2.0, help="live: the gap of the overload run")
    ap.add_argument("--json", type=Path, help="also write every figure and record here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = ap.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if bad := set(phases) - set(PHASES):
        ap.error(f"unknown phase(s) {', '.join(sorted(bad))}; choose from {', '.join(PHASES)}")
    args.client_levels = ints(args.clients)
    procs_levels = ints(args.procs) if "rest" in phases else []
    if "live" in phases and args.live_procs in procs_levels:  # its workers stay up for the soak
        procs_levels = [p for p in procs_levels if p != args.live_procs] + [args.live_procs]
    max_sessions = 2 * min(len(v) for v in CODEWORDS.values())
    if not 1 <= args.live_sessions <= max_sessions:
        ap.error(f"--live-sessions must be 1..{max_sessions} (one code word per session)")
    if min(args.live_gap_s, args.overload_gap_s) < 1.5:
        ap.error("a gap below 1.5 s lets the next clip continue the last utterance")
    if not (SPEECH / "transcripts.tsv").exists():
        sys.exit(f"evaluation speech not found at {SPEECH} (../shared/eval-data beside the clone; see its README)")
    clips = load_clips(None)
    files = load_files() if "live" in phases else []

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rich.console import Console

    console = Console(width=max(Console().width, 180))  # the tables' columns unwrapped
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t_start = time.perf_counter()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from workers.core.settings import get_settings

    models_dir = os.environ.get("MEDVOICE_MODELS_DIR") or str(get_settings().model_root.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-bench-load-"))
    data = tmp / "data"
    stack: Stack | None = None
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        n_users = max([*args.client_levels, 1] if "rest" in phases else [1]) + (
            args.live_sessions + 1 if "live" in phases else 0
        )
        env = {
            **os.environ,
            "MEDVOICE_DATA_DIR": str(data),
            "MEDVOICE_MODELS_DIR": models_dir,
            "MEDVOICE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "MEDVOICE_CONSULT_MAX_TOKENS": str(args.max_tokens),
            "MEDVOICE_KB_DIR": str(data / "knowledge"),
            "MEDVOICE_CONSULT_SSE_TIMEOUT_S": str(args.turn_timeout_s),
            "MEDVOICE_LIVE_MAX_SESSIONS": str(max(50, args.live_sessions + 10)),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("MEDVOICE_KB_CHROMA_URL", None)
        stack = Stack(tmp, env, env)
        env["MEDVOICE_REDIS_URL"] = stack.start_redis()
        log("starting the Chroma server")
        env["MEDVOICE_KB_CHROMA_URL"] = stack.start_chroma(data / "knowledge")
        os.environ.update(env)  # this process: the same Redis for tasks it sends (ingest, speech)
        get_settings.cache_clear()
        s = get_settings()
        from app.migrate import upgrade

        upgrade(s.resolved_database_url)
        make_users(s.resolved_database_url)
        users = make_clinicians(s.resolved_database_url, n_users, BENCH_PASSWORD)
        log("starting the API")
        base = stack.start_api()
        admin_tok = token(base, "bench-admin")
        kb = None
        rest: list[dict[str, Any]] = []
        ready: dict[int, float] = {}
        for procs in procs_levels:
            stack.stop_workers()
            log(f"starting one worker node per pool with {procs} process(es) each")
            t = time.perf_counter()
            stack.start_workers("pools", procs)
            ready[procs] = time.perf_counter() - t
            if kb is None:
                log("ingesting the knowledge base through the rag pool")
                kb = ingest(base, admin_tok, tmp, args.distractors)
            tokens = [token(base, u) for u in users[: max(args.client_levels)]]  # fresh: JWTs expire
            rest += rest_phase(stack, base, tokens, clips, procs, args)
        live = overload = None
        if "live" in phases:
            if not stack.workers or procs_levels[-1:] != [args.live_procs]:
                stack.stop_workers()
                log(f"starting one worker node per pool with {args.live_procs} process(es) each")
                t = time.perf_counter()
                stack.start_workers("pools", args.live_procs)
                ready[args.live_procs] = time.perf_counter() - t
            log(f"  speaking {args.live_sessions} code-word phrases with the product's voices")
            codes = make_codes(args.live_sessions, data)
            plans = plan_sessions(args.live_sessions, files, codes)
            # Each session its own clinician; one more for the new sessions that try to join while they speak.
            tokens = [token(base, u) for u in users[-args.live_sessions - 1 :]]
            live = live_phase(stack, base, tokens[1:], plans, args.live_gap_s, args.live_minutes, args, tokens[0])
            if args.overload_minutes > 0:
                tokens = [token(base, u) for u in users[-args.live_sessions - 1 :]]  # fresh: JWTs expire
                gap, minutes = args.overload_gap_s, args.overload_minutes
                overload = live_phase(stack, base, tokens[1:], plans, gap, minutes, args, tokens[0])
        load_end = os.getloadavg()
        header = [
            f"[bold]medvoice load benchmark[/bold] — {started}, {time.perf_counter() - t_start:.0f} s; "
            f"{platform.node()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
            f"load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, at end "
            f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (other work on the machine inflates every "
            "figure)",
            f"models: {describe_models(s)}",
            f"threads: asr {s.asr_threads}, live {s.live_threads}, rag {s.rag_threads}, llm {s.llm_threads}, "
            f"tts {s.tts_threads}; MEDVOICE_CONSULT_MAX_TOKENS={args.max_tokens}; answer mode {s.consult_answer_mode}",
            "stack: private redis-server, SQLite, Chroma server, API subprocess, one worker node per pool; workers "
            "ready (models loaded) after " + ", ".join(f"{v:.0f} s at {k} process(es)/pool" for k, v in ready.items()),
            f"knowledge base: {kb['topic_docs']} topic documents + {kb['distractor_docs']} distractor passages, "
            f"{kb['chunks']} chunks"
            if kb
            else "knowledge base: - (not needed by transcription-only live sessions)",
            f"REST: {len(clips)} recordings cycled (en + zh), a fresh consultation per turn, ceil({args.turns} / "
            f"clients) turns per client, no new upload after {args.step_s:g} s; every client its own clinician"
            if rest
            else "REST: -",
        ]
        rows = report(console, header, rest, live, overload, args)
        results.update(header=header, kb=kb, workers_ready_s=ready, rest=rest, live=live, overload=overload)
        results.update(live_summary=rows)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False))
            log(f"wrote {args.json}")
    except KeyboardInterrupt:
        log("interrupted: stopping every process this bench started")
        raise SystemExit(130) from None
    except Exception:
        show_worker_logs(stack)
        raise
    finally:
        tear_down(stack, tmp, args.keep)


def main() -> None:
    leave_after(run)


if __name__ == "__main__":
    main()
