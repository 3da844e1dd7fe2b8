"""Engine benchmark: load time, peak RSS and speed of each model engine on this machine, in-process and
through its Celery pool (same run, same settings), so queue overhead shows as a ratio.

    python bench/engines.py                 # all engines, 5 runs each, medians
    python bench/engines.py --runs 3 --engines asr,llm --no-pool

Figures (medians of --runs runs, after one warm-up):
- ASR (faster-whisper): real-time factor on ../shared/eval-data/speech/en_jfk_16k_mono.wav (11 s).
- LLM (llama.cpp): time to first token / first sentence and tokens per second on a RAG-sized prompt
  (~700 tokens: system prompt + MedQuAD passages + question); first sentence with the system-prefix state
  restored vs a cold context, and with the prefix already in the KV cache (consecutive turns).
- TTS: real-time factor and time to the first sentence's audio of a three-sentence answer (the English
  voice alone: the Mandarin voice is off in that child).
- TTS zh (the Mandarin voice alone): load, RSS, first sentence, real-time factor, and Whisper base's character
  error rate on its speech (language zh) over ≥ 20 sentences: the zh sample knowledge base's, then
  Chinese passages of ../shared/eval-data (zh_medicalgpt) when present. Reference and transcript are compared
  as Chinese characters, digits read as Chinese numbers, punctuation and Latin letters left out.
- Embeddings: passages per second (batches of 32), and one query's latency.
Each engine loads in its own subprocess, so its peak RSS (VmHWM) is its own. The pool phase starts a
real worker consuming all four queues (a private redis-server when none answers) and times the same
work through `send_task` (LLM: the client-observed first sentence on the turn's Redis stream).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval-data"
JFK = EVAL / "speech" / "en_jfk_16k_mono.wav"
QUESTION = "What are the signs and symptoms of adult acute lymphoblastic leukemia, and how is it treated?"
LLM_TOKENS = int(os.environ.get("MEDVOICE_BENCH_LLM_TOKENS", "64"))
ZH_KB = ROOT / "knowledge" / "sample_kb" / "influenza-zh.md"
ZH_EVAL = EVAL / "rag" / "zh_medicalgpt" / "corpus.jsonl"
ZH_SENTENCES = int(os.environ.get("MEDVOICE_BENCH_ZH_SENTENCES", "24"))
ANSWER = (
    "Paracetamol is usually taken every four to six hours. Do not take more than four grams in a day. "
    "Ask your doctor if the pain lasts longer than three days."
)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def vm_hwm_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rag_context(target_tokens: int, count_tokens, skip: int = 0) -> list[str]:
    """MedQuAD passages (eval data) until the prompt reaches ~target_tokens; synthetic text without it.
    `skip` starts further down the file, so that successive turns carry different context."""
    passages: list[str] = []
    path = EVAL / "rag" / "medquad" / "subset_passages.jsonl"
    source = (
        [json.loads(line)["text"] for line in path.open()][:400]
        if path.exists()
        else [
            f"Passage {i}: adults with a fever may take 500 mg of paracetamol every six hours, "
            "with no more than four grams a day; children need a weight-based dose." * 3
            for i in range(400)
        ]
    )
    for text in source[skip:]:
        passages.append(" ".join(text.split())[:1200])
        if count_tokens(passages) >= target_tokens:
            break
    return passages


def zh_sentences(n: int = ZH_SENTENCES) -> list[tuple[str, str]]:
    """(source, sentence): every sentence of the zh sample KB page, then short eval-data passages' sentences."""
    import re

    from knowledge.text import cjk_ratio, split_sentences

    out: list[tuple[str, str]] = []
    body = ZH_KB.read_text(encoding="utf-8").split("---", 2)[-1]
    for line in body.splitlines():
        if line.strip() and not line.startswith("#"):
            out += [("kb", s) for s in split_sentences(line.strip())]
    if ZH_EVAL.exists():
        for row in ZH_EVAL.open(encoding="utf-8"):
            for sent in re.split(r"(?<=[。！？])", json.loads(row)["text"]):
                sent = sent.strip()
                if (
                    len(out) < n
                    and 10 <= len(sent) <= 36
                    and cjk_ratio(sent) > 0.9
                    and not re.search(r"[0-9A-Za-z]", sent)  # community text: its numbers are list marks
                ):
                    out.append(("eval-data", sent))
            if len(out) >= n:
                break
    return out


def zh_chars(text: str) -> str:
    """Only the Chinese characters, digits read as Chinese numbers: what a CER over speech should compare."""
    import re

    from workers.engines.voices.zh_frontend import chinese_number

    text = re.sub(r"\d+(?:\.\d+)?", lambda m: chinese_number(m.group(0)), text)
    return re.sub(r"[^\u4e00-\u9fff]", "", text)


def cer(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance, reference length) in characters."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1], len(ref)


def tts_zh_child(runs: int) -> dict:
    """The Mandarin voice on its own: load, RSS, first sentence, RTF; then Whisper base hears it (CER)."""
    import numpy as np
    import soxr

    from workers.core.settings import get_settings
    from workers.engines.voices import zh_frontend
    from workers.engines.voices.baker import BakerVoice
    from workers.modelfiles import resolve_baker

    s = get_settings()
    base_rss = vm_hwm_mb()
    t0 = time.perf_counter()
    voice = BakerVoice(s, *resolve_baker(s))
    load_s = time.perf_counter() - t0
    speed = s.tts_baker_speed
    sentences = zh_sentences()
    voice.synthesize(sentences[0][1], speed)  # warm-up
    first = []
    for _ in range(runs):
        t = time.perf_counter()
        voice.synthesize(sentences[0][1], speed)
        first.append(time.perf_counter() - t)
    clips, synth, audio = [], 0.0, 0.0
    for _, sent in sentences:
        t = time.perf_counter()
        wav = voice.synthesize(sent, speed)
        synth += time.perf_counter() - t
        audio += wav.size / voice.sample_rate
        clips.append(wav)
    rss_voice = vm_hwm_mb()
    from workers.engines.asr import load as load_asr

    asr = load_asr(s)
    errors = {"kb": [0, 0], "eval-data": [0, 0]}
    for (source, sent), wav in zip(sentences, clips):
        heard = asr.transcribe(soxr.resample(wav, voice.sample_rate, 16000).astype(np.float32), language="zh")
        e, n = cer(zh_chars(zh_frontend.normalise(sent)), zh_chars(heard["text"]))
        errors[source][0] += e
        errors[source][1] += n
    total_e, total_n = sum(e for e, _ in errors.values()), sum(n for _, n in errors.values())
    return {
        "engine": "tts-zh",
        "load_s": load_s,
        "rss_base_mb": base_rss,
        "rss_peak_mb": rss_voice,
        "first_sentence_audio_s": median(first),
        "rtf": synth / audio,
        "cer": total_e / total_n,
        "cer_by_source": {k: (e / n if n else None, n) for k, (e, n) in errors.items()},
        "sentences": [sent for _, sent in sentences],
        "n_sentences": len(sentences),
        "detail": f"baker, speed {speed}",
    }


# ---------------------------------------------------------------------------------------------------
# child: one engine, in-process
# ---------------------------------------------------------------------------------------------------
def child(engine: str, runs: int) -> dict:
    if engine == "tts-zh":
        return tts_zh_child(runs)
    from workers import engines
    from workers.core.settings import get_settings

    s = get_settings()
    base_rss = vm_hwm_mb()
    t0 = time.perf_counter()
    if engine == "asr":
        from workers.engines import asr  # noqa: F401
    elif engine == "llm":
        from workers.engines import llm  # noqa: F401
    elif engine == "tts":
        from workers.engines import tts  # noqa: F401
    elif engine == "embed":
        from workers.engines import embed  # noqa: F401
    eng = engines.get(engine)
    load_s = time.perf_counter() - t0
    out: dict = {"engine": engine, "load_s": load_s, "rss_after_load_mb": vm_hwm_mb(), "rss_base_mb": base_rss}

    if engine == "asr":
        audio = eng.decode(JFK)
        eng.transcribe(audio)  # warm-up
        rtfs, secs = [], []
        for _ in range(runs):
            r = eng.transcribe(audio)
            rtfs.append(r["timings"]["rtf"])
            secs.append(r["timings"]["transcribe_s"])
        out.update(
            rtf=median(rtfs),
            transcribe_s=median(secs),
            audio_s=r["duration_s"],
            detail=f"beam {s.asr_beam_size}, {eng.compute_type}, {s.asr_threads} threads",
        )
    elif engine == "llm":
        from workers.engines.llm import build_messages

        def prompt_tokens(ctx: list[str]) -> int:
            return len(eng.tokens_for(build_messages(s.llm_system_prompt, QUESTION, ctx)))

        # A different ~700-token RAG prompt for every turn (same system prompt, other passages and question).
        variants = []
        for i in range(3 * runs + 2 + runs + 1):
            ctx = rag_context(650, prompt_tokens, skip=i * 7)
            variants.append(build_messages(s.llm_system_prompt, QUESTION, ctx))
        n_prompt = len(eng.tokens_for(variants[0]))
        turns = iter(variants)

        def one(mode: str) -> dict:
            # cold: nothing cached, the whole prompt is evaluated; prefix: an empty context restored from
            # the system-prefix state; warm: the previous turn's KV cache is reused as far as it matches
            # (the system prompt), as in a worker serving one turn after another.
            if mode in ("cold", "prefix"):
                eng.llm.reset()
            r = eng.generate(next(turns), max_tokens=LLM_TOKENS, temperature=0, use_prefix_cache=(mode != "cold"))
            return r["timings"]

        # The prefix cache in isolation: restoring the saved state vs evaluating the system prompt again.
        restore, evaluate = [], []
        for _ in range(runs):
            eng.llm.reset()
            t = time.perf_counter()
            eng.llm.load_state(eng._prefix_state)  # noqa: SLF001
            restore.append(time.perf_counter() - t)
            eng.llm.reset()
            t = time.perf_counter()
            eng.llm.eval(eng.prefix_tokens)
            evaluate.append(time.perf_counter() - t)
        out.update(prefix_restore_s=median(restore), prefix_evaluate_s=median(evaluate))
        one("cold")  # warm-up
        res: dict[str, list[dict]] = {"cold": [], "prefix": [], "warm": []}
        for _ in range(runs):  # interleaved, so that other load on the machine hits every mode alike
            for mode in res:
                res[mode].append(one(mode))
        for mode, ts in res.items():
            out[mode] = {
                k: median([t[k] for t in ts if t[k] is not None])
                for k in ("first_token_s", "first_sentence_s", "total_s", "tokens", "tokens_per_s")
            }
        out.update(
            prompt_tokens=n_prompt,
            prefix_tokens=len(eng.prefix_tokens),
            prefix_eval_s=eng.prefix_eval_s,
            prefix_restored=[t["prefix_restored"] for t in res["prefix"]],
            messages=list(turns),
        )
    elif engine == "tts":
        from workers.engines.splitter import split_sentences

        sentences = split_sentences(ANSWER)
        eng.synthesize(sentences[0])  # warm-up
        first, rtfs = [], []
        for _ in range(runs):
            t = time.perf_counter()
            eng.synthesize(sentences[0])
            first.append(time.perf_counter() - t)
            synth = audio = 0.0
            for sent in sentences:
                _, tm = eng.synthesize(sent)
                synth += tm["synth_s"]
                audio += tm["audio_s"]
            rtfs.append(synth / audio)
        out.update(
            rtf=median(rtfs),
            first_sentence_audio_s=median(first),
            backend=eng.name,
            sentences=sentences,
            detail=f"{eng.name}, speed {s.tts_speed}",
        )
    elif engine == "embed":
        ctx = rag_context(10**9, lambda p: 0)[:32] * 4  # 128 passages
        eng.embed(ctx[:8])
        rates, q = [], []
        for _ in range(runs):
            _, secs = eng.embed(ctx)
            rates.append(len(ctx) / secs)
            _, qs = eng.embed([QUESTION], kind="query")
            q.append(qs)
        out.update(passages_per_s=median(rates), query_s=median(q), n=len(ctx), model=eng.name, passages=ctx)
    out["rss_peak_mb"] = vm_hwm_mb()
    return out


# ---------------------------------------------------------------------------------------------------
# parent: subprocess per engine, then the pool
# ---------------------------------------------------------------------------------------------------
def run_child(engine: str, runs: int, env: dict) -> dict:
    if engine == "tts":  # the English voice's own figures: the Mandarin one has its child, tts-zh
        env = {**env, "MEDVOICE_TTS_BAKER_VOICE": "false"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--runs", str(runs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} bench failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pool_phase(results: dict, runs: int, env: dict, tmp: Path) -> dict:
    import redis

    procs = []
    from workers.core.settings import get_settings

    # The Redis the settings name (MEDVOICE_REDIS_URL or the default) if it answers, else a private one.
    url = env.get("MEDVOICE_REDIS_URL") or get_settings().redis_url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:  # noqa: BLE001 - start a private one
        port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(tmp),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
    env = {**env, "MEDVOICE_REDIS_URL": url}
    os.environ.update({"MEDVOICE_REDIS_URL": url, "MEDVOICE_DATA_DIR": env["MEDVOICE_DATA_DIR"]})
    get_settings.cache_clear()  # the Celery app below must be built on the URL the worker got
    from workers.celery_app import celery_app
    from workers.core import events

    log = open(tmp / "worker.log", "wb")  # noqa: SIM115
    name = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "--pool",
            "all",
            "--concurrency",
            "1",
            "--name",
            name,
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out: dict = {}
    try:
        deadline = time.monotonic() + 120
        while not any(name in r for r in celery_app.control.ping(destination=[name], timeout=0.5)):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError((tmp / "worker.log").read_text()[-3000:])

        def call(task: str, *args, **kwargs) -> tuple[dict, float]:
            t = time.perf_counter()
            r = celery_app.send_task(task, args=args, kwargs=kwargs).get(timeout=600)
            return r, time.perf_counter() - t

        t = time.perf_counter()
        call("asr.ping")  # answers once the pool process has loaded every engine
        out["ready_s"] = time.perf_counter() - t
        data = Path(env["MEDVOICE_DATA_DIR"])
        if "asr" in results:
            (data / "audio").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(JFK, data / "audio" / "jfk.wav")
            call("asr.transcribe", "audio/jfk.wav")
            rt = [call("asr.transcribe", "audio/jfk.wav")[1] for _ in range(runs)]
            out["asr"] = {"round_trip_s": median(rt), "rtf": median(rt) / results["asr"]["audio_s"]}
        if "llm" in results:
            variants = results["llm"]["messages"]
            r = events.client(url)
            firsts, totals, inner = [], [], []
            for i in range(runs + 1):
                turn = f"bench-{uuid.uuid4().hex[:8]}"
                t = time.perf_counter()
                res = celery_app.send_task(
                    "llm.generate",
                    args=[turn],
                    kwargs={"messages": variants[i % len(variants)], "max_tokens": LLM_TOKENS, "temperature": 0},
                )
                first = None
                while first is None and time.perf_counter() - t < 600:
                    got = events.read(turn, block_ms=1000, r=r)
                    if any(e["type"] == "sentence" for _, e in got):
                        first = time.perf_counter() - t
                result = res.get(timeout=600)
                if i:  # the first was a warm-up
                    firsts.append(first)
                    totals.append(time.perf_counter() - t)
                    inner.append(result["timings"]["first_sentence_s"])
            out["llm"] = {
                "first_sentence_s": median(firsts),
                "total_s": median(totals),
                "worker_first_sentence_s": median(inner),
            }
        if "tts" in results:
            sent = results["tts"]["sentences"][0]
            call("tts.synthesize", sent)
            out["tts"] = {"first_sentence_audio_s": median([call("tts.synthesize", sent)[1] for _ in range(runs)])}
        if "tts-zh" in results:
            sent = results["tts-zh"]["sentences"][0]
            call("tts.synthesize", sent)
            rt = [call("tts.synthesize", sent)[1] for _ in range(runs)]
            out["tts-zh"] = {"first_sentence_audio_s": median(rt)}
        if "embed" in results:
            passages = results["embed"]["passages"]
            call("rag.embed", passages[:8])
            secs = [call("rag.embed", passages)[1] for _ in range(runs)]
            out["embed"] = {
                "passages_per_s": len(passages) / median(secs),
                "query_s": median([call("rag.embed", QUESTION, kind="query")[1] for _ in range(runs)]),
            }
        children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        out["pool_rss_peak_mb"] = max((vm_hwm_mb(c) for c in children), default=float("nan"))
    finally:
        import signal

        try:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(worker.pid, signal.SIGKILL)
        for p in procs:
            p.terminate()
            p.wait(10)
        log.close()
    return out


def fmt(x: float | None, unit: str = "", digits: int = 3) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}{unit}"


def report(results: dict, pool: dict | None) -> str:
    rows = [("engine", "load", "peak RSS", "figure", "in-process", "via pool", "pool/in-proc")]

    def add(
        engine: str,
        figure: str,
        local: float | None,
        via: float | None,
        unit: str = "s",
        first: bool = False,
        higher_better: bool = False,
    ) -> None:
        r = results[engine]
        ratio = None
        if local and via:
            ratio = (local / via) if higher_better else (via / local)
        rows.append(
            (
                engine if first else "",
                fmt(r["load_s"], " s", 2) if first else "",
                f"{r['rss_peak_mb']:.0f} MB" if first else "",
                figure,
                fmt(local, unit),
                fmt(via, unit),
                fmt(ratio, "x", 2),
            )
        )

    p = pool or {}
    if "asr" in results:
        r = results["asr"]
        add(
            "asr",
            f"RTF ({r['audio_s']:.1f}s clip; {r['detail']})",
            r["rtf"],
            p.get("asr", {}).get("rtf"),
            "",
            first=True,
        )
    if "llm" in results:
        r = results["llm"]
        add(
            "llm",
            f"first token, cold ({r['prompt_tokens']}-token prompt)",
            r["cold"]["first_token_s"],
            None,
            first=True,
        )
        add("llm", "first sentence, cold context", r["cold"]["first_sentence_s"], None)
        add(
            "llm",
            f"first sentence, prefix state restored ({r['prefix_tokens']} tok)",
            r["prefix"]["first_sentence_s"],
            None,
        )
        add("llm", f"system prefix ({r['prefix_tokens']} tok): restore state vs evaluate", r["prefix_restore_s"], None)
        rows[-1] = rows[-1][:4] + (f"{r['prefix_restore_s']:.3f}s vs {r['prefix_evaluate_s']:.3f}s", "-", "-")
        add(
            "llm",
            "first sentence, consecutive turn",
            r["warm"]["first_sentence_s"],
            p.get("llm", {}).get("first_sentence_s"),
        )
        add("llm", "tokens per second (decode)", r["warm"]["tokens_per_s"], None, " tok/s", higher_better=True)
        add(
            "llm",
            f"answer total ({r['warm']['tokens']:.0f} tokens)",
            r["warm"]["total_s"],
            p.get("llm", {}).get("total_s"),
        )
    if "tts" in results:
        r = results["tts"]
        add("tts", f"RTF ({r['detail']})", r["rtf"], None, "", first=True)
        add("tts", "first sentence audio", r["first_sentence_audio_s"], p.get("tts", {}).get("first_sentence_audio_s"))
    if "tts-zh" in results:
        r = results["tts-zh"]
        add("tts-zh", f"RTF ({r['detail']}, {r['n_sentences']} sentences)", r["rtf"], None, "", first=True)
        add(
            "tts-zh",
            "first sentence audio",
            r["first_sentence_audio_s"],
            p.get("tts-zh", {}).get("first_sentence_audio_s"),
        )
        by = ", ".join(f"{k} {v[0]:.3f} over {v[1]} chars" for k, v in r["cer_by_source"].items() if v[0] is not None)
        add("tts-zh", f"Whisper base CER of its speech ({by})", r["cer"], None, "")
    if "embed" in results:
        r = results["embed"]
        add(
            "embed",
            f"passages/s ({r['model']}, {r['n']} passages)",
            r["passages_per_s"],
            p.get("embed", {}).get("passages_per_s"),
            "/s",
            first=True,
            higher_better=True,
        )
        add("embed", "one query", r["query_s"], p.get("embed", {}).get("query_s"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if pool:
        lines.append(
            f"pool: one worker process serving all four queues, engines loaded in "
            f"{pool.get('ready_s', float('nan')):.1f} s, peak RSS {pool.get('pool_rss_peak_mb', 0):.0f} MB"
        )
    return "\n".join(lines)


def main() -> None:
    global LLM_TOKENS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--engines", default="asr,llm,tts,tts-zh,embed")
    ap.add_argument("--no-pool", action="store_true", help="skip the Celery pool phase")
    ap.add_argument(
        "--llm-tokens",
        type=int,
        default=int(os.environ.get("MEDVOICE_BENCH_LLM_TOKENS", "64")),
        help="answer length for the LLM figures",
    )
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ["MEDVOICE_BENCH_LLM_TOKENS"] = str(args.llm_tokens)
    LLM_TOKENS = args.llm_tokens
    if args.child:
        print(json.dumps(child(args.child, args.runs)))
        return
    if not JFK.exists():
        sys.exit(f"evaluation speech not found at {JFK} (it lives in ../shared beside the clone)")
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-bench-"))
    env = {**os.environ, "MEDVOICE_DATA_DIR": str(tmp / "data")}
    if "MEDVOICE_MODELS_DIR" not in env:
        from workers.core.settings import get_settings

        env["MEDVOICE_MODELS_DIR"] = str(get_settings().model_root.resolve())
    try:
        results: dict = {}
        failed: dict[str, str] = {}
        for engine in [e for e in args.engines.split(",") if e]:
            print(f"benchmarking {engine} in-process ({args.runs} runs)...", file=sys.stderr, flush=True)
            try:
                results[engine] = run_child(engine, args.runs, env)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failed[engine] = str(exc)[-2000:]
                print(f"{engine}: FAILED\n{failed[engine]}", file=sys.stderr, flush=True)
        pool = None
        if not args.no_pool:
            print("benchmarking through the Celery pool...", file=sys.stderr, flush=True)
            try:
                pool = pool_phase(results, args.runs, env, tmp)
            except Exception as exc:  # noqa: BLE001 - still print the in-process figures
                print(f"pool phase failed: {exc}", file=sys.stderr)
        load = os.getloadavg()
        print(
            f"medvoice engines on {os.cpu_count()} CPU cores; medians of {args.runs} runs; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start {load_start[0]:.1f}, "
            f"at end {load[0]:.1f} (other work on the machine inflates every figure)"
        )
        print(report(results, pool))
        for engine, err in failed.items():
            print(f"{engine}: failed ({err.strip().splitlines()[-1] if err.strip() else 'no output'})")
        if args.json:
            slim = {
                k: {kk: vv for kk, vv in v.items() if kk not in ("messages", "passages")} for k, v in results.items()
            }
            args.json.write_text(json.dumps({"in_process": slim, "pool": pool}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
