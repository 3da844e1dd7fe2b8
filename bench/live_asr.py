"""Live dictation benchmark: FunASR clients in 2pass mode, 1, 4 and 20 at once, streaming real speech at real-time
pace through a real stack this script starts itself. Prints figures; asserts none.

    python bench/live_asr.py                      # 1, 4, 20 sessions
    python bench/live_asr.py --sessions 1,4 --json /tmp/live.json

The stack (private to the run, removed at exit): a temporary data dir and SQLite database, a redis-server on a
free port, `medvoice serve` with MEDVOICE_FUNASR_PORT set (the API and the FunASR port in one process, as
deployed) and one `medvoice worker --pool live` (--concurrency, default 1). Each session streams one file of
../shared/eval-data/speech (cycled) as 60 ms PCM16 frames at real-time pace, then `is_speaking: false` with
`is_end`, using the protocol client of tests/live/funasr_client.py. Per level it prints:

- end → final: from the last audio frame sent to the reply with `is_final: true` (p50/p95 over sessions);
- partials: `2pass-online` replies per session and the median gap between them while the speaker talks;
- CER (Chinese) / WER (English) of the finals (the `2pass-offline` texts joined) against the references, and
  against raw faster-whisper on the same whole file (same model, options and language, `vad_filter=False`),
  which this script runs in-process after the sessions; "= raw" counts the files whose final equals it;
- after the levels, each file once in offline mode (sent as fast as possible: one transcription of the whole
  file), which must equal raw faster-whisper exactly;
- CPU (percent of one core, averaged over the level) and peak RSS of the API process and of the worker's pool.

Text is compared lower-cased, without punctuation, Chinese in Simplified characters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SPEECH = ROOT.parent / "shared" / "eval-data" / "speech"

from consultation import Stack, free_port, leave_after, log, pct, tear_down  # noqa: E402
from tests.live import funasr_client as fc  # noqa: E402

FRAME_MS = 60


def load_files() -> list[dict[str, Any]]:
    import soundfile as sf

    if not (SPEECH / "transcripts.tsv").exists():
        raise SystemExit(f"no speech recordings at {SPEECH} (../shared/eval-data/speech beside the clone)")
    out = []
    with (SPEECH / "transcripts.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            samples, rate = sf.read(SPEECH / row["file"], dtype="int16")
            if samples.ndim > 1:
                samples = samples[:, 0]
            lang = "zh" if row["lang"].startswith("zh") else "en"
            out.append({"file": row["file"], "lang": lang, "ref": row["reference"], "samples": samples, "rate": rate})
    return out


_T2S = None


def norm(text: str, lang: str) -> list[str]:
    """Tokens to score: characters for Chinese (CER), words otherwise (WER)."""
    global _T2S
    if _T2S is None:
        import opencc

        _T2S = opencc.OpenCC("t2s")
    text = _T2S.convert(text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    if lang == "zh":
        return [c for c in text if not c.isspace()]
    return text.split()


def error_rate(ref: str, hyp: str, lang: str) -> float:
    import jiwer

    r, h = norm(ref, lang), norm(hyp, lang)
    if not r:
        return float("nan")
    return jiwer.wer(" ".join(r), " ".join(h)) if h else 1.0


class Sampler:
    """CPU seconds and peak RSS of processes (with their children) while a level runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.peak = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._cpu0 = {k: self._cpu(p) for k, p in self.procs.items()}
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _all(p: Any) -> list[Any]:
        try:
            return [p, *p.children(recursive=True)]
        except Exception:  # noqa: BLE001 - a process that ended
            return [p]

    def _cpu(self, p: Any) -> float:
        total = 0.0
        for q in self._all(p):
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except Exception:  # noqa: BLE001
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, p in self.procs.items():
                rss = 0.0
                for q in self._all(p):
                    with contextlib.suppress(Exception):  # a child that just ended
                        rss += q.memory_info().rss / 2**20
                self.peak[k] = max(self.peak[k], rss)
            self._stop.wait(0.5)

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join(5)
        wall = time.monotonic() - self._t0
        return {
            k: {"cpu_pct": 100 * (self._cpu(p) - self._cpu0[k]) / wall, "rss_mb": self.peak[k]}
            for k, p in self.procs.items()
        }


async def one_session(uri: str, clip: dict[str, Any], name: str) -> dict[str, Any]:
    frames = fc.pcm_frames(fc.as_pcm(clip["samples"]), clip["rate"], FRAME_MS)
    first = fc.config("2pass", wav_name=name, rate=clip["rate"], svs_lang=clip["lang"])
    res = await fc.run(
        uri, first, frames, frame_s=FRAME_MS / 1000, end={"is_speaking": False, "is_end": True}, timeout_s=600
    )
    final_at = next(
        (t for m, t in zip(res.messages, res.received_at) if m.get("is_final") and not m.get("is_end")), None
    )
    partial_at = [t for m, t in zip(res.messages, res.received_at) if m.get("mode") == "2pass-online"]
    gaps = [b - a for a, b in zip(partial_at, partial_at[1:]) if b <= res.audio_done_at]
    return {
        "file": clip["file"],
        "lang": clip["lang"],
        "text": res.printed("2pass"),
        "end_to_final_s": (final_at - res.audio_done_at) if final_at else float("nan"),
        "partials": len(partial_at),
        "partial_gaps_s": gaps,
        "errors": [m.get("code") for m in res.errors],
        "wav_names": sorted({m.get("wav_name") for m in res.messages}),
        "got_end": bool(res.messages and res.messages[-1].get("is_end")),
    }


async def offline_pass(uri: str, files: list[dict[str, Any]]) -> dict[str, str]:
    """Each whole file in offline mode, sent as fast as the client can: one live.transcribe of the same audio."""
    out = {}
    for clip in files:
        frames = fc.pcm_frames(fc.as_pcm(clip["samples"]), clip["rate"], FRAME_MS)
        first = fc.config("offline", rate=clip["rate"], svs_lang=clip["lang"])
        res = await fc.run(uri, first, frames, timeout_s=600)
        out[clip["file"]] = res.printed("offline")
    return out


async def level(uri: str, files: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    clips = [files[i % len(files)] for i in range(n)]
    return await asyncio.gather(*(one_session(uri, c, f"s{i}") for i, c in enumerate(clips)))


def raw_whisper(files: list[dict[str, Any]], model_dir: Path, settings: Any) -> dict[str, str]:
    """The same model and options as live.transcribe on each whole file, faster-whisper called directly."""
    import numpy as np
    import soxr
    from faster_whisper import WhisperModel

    compute = settings.asr_compute_type or "int8"
    model = WhisperModel(str(model_dir), device="cpu", compute_type=compute, cpu_threads=settings.live_threads)
    out = {}
    for clip in files:
        audio = clip["samples"]
        if clip["rate"] != 16000:
            audio = soxr.resample(audio, clip["rate"], 16000).astype(np.int16)
        segments, _info = model.transcribe(
            audio.astype(np.float32) / 32768.0,
            language=clip["lang"],
            beam_size=settings.asr_beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            word_timestamps=True,
            initial_prompt=settings.asr_initial_prompt,
            hotwords=settings.asr_hotwords,
        )
        sep = "" if clip["lang"] == "zh" else " "
        out[clip["file"]] = sep.join(s.text.strip() for s in segments if s.text.strip())
    return out


def fmt(x: float, d: int = 2) -> str:
    return "-" if x != x else f"{x:.{d}f}"


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,4,20", help="concurrent sessions per level")
    ap.add_argument("--concurrency", type=int, default=1, help="live worker processes")
    ap.add_argument("--json", type=Path, help="write every session's figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    levels = [int(x) for x in args.sessions.split(",") if x.strip()]
    files = load_files()
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-live-bench-"))
    stack: Stack | None = None
    try:
        from app.migrate import upgrade
        from workers.core.settings import Settings

        models = Path(os.environ.get("MEDVOICE_MODELS_DIR") or ROOT / "var" / "models")
        db_url = f"sqlite:///{tmp / 'medvoice.db'}"
        upgrade(db_url)
        funasr_port = free_port()
        env = {
            **os.environ,
            "MEDVOICE_DATA_DIR": str(tmp / "data"),
            "MEDVOICE_MODELS_DIR": str(models),
            "MEDVOICE_DATABASE_URL": db_url,
            "MEDVOICE_FUNASR_PORT": str(funasr_port),
            "MEDVOICE_LIVE_MAX_SESSIONS": "100",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        stack = Stack(tmp, env, env)
        env["MEDVOICE_REDIS_URL"] = stack.start_redis()
        os.environ["MEDVOICE_REDIS_URL"] = env["MEDVOICE_REDIS_URL"]
        stack.start_api()
        log(f"API {stack.api}, FunASR port {funasr_port}; starting the live worker")
        node = f"benchlive@{stack.host}"
        stack.spawn(
            "worker-live",
            [sys.executable, "-m", "app.cli", "worker", "--pool", "live", "--concurrency", str(args.concurrency)]
            + ["--name", node, "--loglevel", "INFO"],
        )
        stack.workers = ["worker-live"]
        import redis

        from workers.celery_app import ENGINES_READY_PREFIX

        r = redis.Redis.from_url(env["MEDVOICE_REDIS_URL"])
        stack._wait(  # noqa: SLF001 - the bench stack's own wait
            lambda: r.scard(ENGINES_READY_PREFIX + node) >= args.concurrency, 300, "the live worker", "worker-live"
        )
        uri = f"ws://127.0.0.1:{funasr_port}/"
        asyncio.run(level(uri, files[:1], 1))  # warm-up: first calls load lazily
        pids = {"api": stack.procs["api"].pid, "worker": stack.procs["worker-live"].pid}
        results: dict[int, dict[str, Any]] = {}
        for n in levels:
            log(f"{n} concurrent sessions")
            sampler = Sampler(pids)
            sessions = asyncio.run(level(uri, files, n))
            results[n] = {"sessions": sessions, "resources": sampler.stop()}
        offline = asyncio.run(offline_pass(uri, files))
        stack.close()  # the raw baseline gets the machine to itself
        log("raw faster-whisper on the same files")
        settings = Settings(models_dir=models, data_dir=tmp / "data")
        from workers.modelfiles import resolve_asr

        raw = raw_whisper(files, resolve_asr(settings), settings)
        report(results, files, raw, offline, args.concurrency)
        if args.json:
            dump = {"levels": results, "raw": raw, "offline": offline}
            args.json.write_text(json.dumps(dump, ensure_ascii=False, indent=1, default=str))
    except BaseException:
        from consultation import show_worker_logs

        show_worker_logs(stack)
        raise
    finally:
        tear_down(stack, tmp, args.keep)


def report(
    results: dict[int, dict[str, Any]],
    files: list[dict[str, Any]],
    raw: dict[str, str],
    offline: dict[str, str],
    conc: int,
) -> None:
    refs = {f["file"]: f for f in files}
    print(f"\nlive dictation, FunASR 2pass, real-time pace, {len(files)} recordings, 1 live worker x{conc}")
    header = (
        "| sessions | finals | end→final p50 s | p95 s | partials/session | partial gap p50 s | CER zh | WER en "
        "| vs raw CER/WER | = raw | API CPU % | API RSS MB | worker CPU % | worker RSS MB |"
    )
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    for n, res in results.items():
        ss = res["sessions"]
        ok = [s for i, s in enumerate(ss) if s["got_end"] and not s["errors"] and s["wav_names"] == [f"s{i}"]]
        lat = [s["end_to_final_s"] for s in ss]
        gaps = [g for s in ss for g in s["partial_gaps_s"]]
        cer = [error_rate(refs[s["file"]]["ref"], s["text"], "zh") for s in ss if s["lang"] == "zh"]
        wer = [error_rate(refs[s["file"]]["ref"], s["text"], "en") for s in ss if s["lang"] == "en"]
        vs_raw = [error_rate(raw[s["file"]], s["text"], s["lang"]) for s in ss]
        same = sum(norm(raw[s["file"]], s["lang"]) == norm(s["text"], s["lang"]) for s in ss)
        r = res["resources"]
        print(
            f"| {n} | {len(ok)}/{n} | {fmt(pct(lat, 50))} | {fmt(pct(lat, 95))} "
            f"| {fmt(statistics.mean(s['partials'] for s in ss), 1)} | {fmt(pct(gaps, 50))} "
            f"| {fmt(statistics.mean(cer), 3) if cer else '-'} | {fmt(statistics.mean(wer), 3) if wer else '-'} "
            f"| {fmt(statistics.mean(vs_raw), 3)} | {same}/{n} "
            f"| {fmt(r['api']['cpu_pct'], 0)} | {fmt(r['api']['rss_mb'], 0)} "
            f"| {fmt(r['worker']['cpu_pct'], 0)} | {fmt(r['worker']['rss_mb'], 0)} |"
        )
    cer = [error_rate(f["ref"], raw[f["file"]], "zh") for f in files if f["lang"] == "zh"]
    wer = [error_rate(f["ref"], raw[f["file"]], "en") for f in files if f["lang"] == "en"]
    print(
        f"\nraw faster-whisper on the whole files (vad_filter=False): CER zh {fmt(statistics.mean(cer), 3)} "
        f"(over {len(cer)} files), WER en {fmt(statistics.mean(wer), 3)} (over {len(wer)} files); the levels"
        " average over their sessions (files cycled)"
    )
    same = sum(norm(raw[f["file"]], f["lang"]) == norm(offline[f["file"]], f["lang"]) for f in files)
    print(f"offline mode (each whole file, sent fast) equals raw faster-whisper on {same}/{len(files)} files")
    for f in files:
        print(f"  {f['file']}: {f['lang']}, {len(f['samples']) / f['rate']:.1f}s")


def main() -> None:
    leave_after(run)


if __name__ == "__main__":
    main()
