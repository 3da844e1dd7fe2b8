"""Consultation benchmark: real REST turns (speech upload → asr → rag → llm → tts) through a real stack this
script starts itself, the same stages in-process without Celery in the same run, and throughput with one
worker process vs two. Prints figures; asserts none.

    python bench/consultation.py                          # 6 uploads, all phases
    python bench/consultation.py --runs 2 --throughput-turns 4 --json /tmp/consult.json
    python bench/consultation.py --phases celery,inproc --stream-tts off   # the pure queue overhead

The stack (all private to the run, removed at exit, also on Ctrl-C or an error): a temporary data dir and
SQLite database migrated with app.migrate.upgrade; a redis-server on a free port (or --redis-url); a Chroma
server (`chroma run`) over the knowledge directory, so the rag worker(s) and this process can all open the
knowledge base (the embedded store is one process only); the API (`medvoice serve`) in a subprocess; and
worker processes (`medvoice worker`, one per pool by default, or `--topology all`). The knowledge base is
ingested through the rag pool: a few short documents written here about what the clips say (REST upload,
English and Chinese) plus MedQuAD and Chinese community-QA passages from ../shared/eval-data as
distractors (one `rag.ingest` task).

Phases (--phases, default all three):
- celery: each run uploads one clip of ../shared/eval-data/speech to a fresh consultation
  (POST /v1/consultations/{id}/turns) and follows /v1/turns/{id}/events; per-stage times come from the
  Turn's timings (GET /v1/turns/{id}): asr/rag/llm/tts `total_s` and `wall_s` (turn created → done);
  the client measures upload → first `sentence` event, → first `audio` event, → `done`.
- inproc: the same clip as a turn created directly in SQL, its stages called as plain functions in this
  process (the chain's task functions, `workers.tasks.turns.STAGES`, engines from the workers.engines
  registry), so it records the same Turn timings and stream events with no broker in between. Runs
  alternate with the celery ones (celery first on even runs, in-process first on odd ones) after one
  warm-up turn each, so that both sides see the same clips, prompts and machine load. Ratio = median
  Celery / median in-process per stage and for the total (wall_s): the queue overhead.
- throughput: K uploads sent at once to one `--pool all` worker with --concurrency 1, then 2 (each pool
  process loads every model, ~2-2.5 GB); turns per minute and the ratio.

Streaming TTS: when the workers speak each sentence while the LLM is still generating
(MEDVOICE_CONSULT_STREAM_TTS, when the setting exists), the llm and tts stages overlap in the Celery
runs; the in-process runs cannot do that (there is no tts pool to hand sentences to), so they always run
sequentially and only the asr and rag ratios are then queue overhead. `--stream-tts off` makes both sides
sequential (like for like everywhere); `--stream-tts config` (default) leaves the workers as configured.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import ctypes
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval-data"
SPEECH = EVAL / "speech"
PHASES = ("celery", "inproc", "throughput")
STAGE_NAMES = ("asr", "rag", "llm", "tts")
# English and Chinese alternate, so that --runs 2 already covers both.
CLIP_ORDER = [
    "en_jfk_16k_mono.wav",
    "zh_funasr_llamacpp_sample.wav",
    "funasr_example_4.wav",
    "funasr_example_0.wav",
    "funasr_example_3.wav",
    "funasr_example_1.wav",
    "funasr_example_2.wav",
]
BENCH_PASSWORD = "bench-password-not-secret"  # a throw-away database, deleted at exit

# ---- the knowledge base: short documents about what the clips say, so retrieval finds something --------
TOPIC_DOCS: list[tuple[str, str, str]] = [
    (
        "civic-health-volunteering",
        "en",
        """# Community health volunteering: what you can do for your country

In his 1961 inaugural address President John F. Kennedy told his fellow Americans: ask not what your
country can do for you, ask what you can do for your country. Clinics often quote the line when they
recruit volunteers for community health work.

What you can do for your country's health: donate blood (whole blood every 56 days in the United States),
join a bone marrow registry, volunteer at a vaccination clinic, learn cardiopulmonary resuscitation, and
help older neighbours reach their appointments. Volunteers under 18 need written consent from a parent.

Clinics should give every volunteer a short induction covering infection control, privacy of patient
records, and whom to call in an emergency.
""",
    ),
    (
        "evening-light-and-sleep",
        "en",
        """# Evening light, lamps and sleep

After early nightfall in winter, many people switch on lamps here and there in the house for the rest of
the evening. Bright or blue-rich light in the evening delays the release of melatonin and shifts the body
clock later, which makes it harder to fall asleep. Warm yellow lamps with a low colour temperature
(below 3000 kelvin) disturb sleep less than cool white light or screens.

Advice for patients with insomnia: dim the lights one to two hours before bed, prefer yellow lamps in the
evening, avoid screens in bed, and get daylight in the morning. Night-shift workers can use blackout
curtains to sleep during the day. In poor, crowded quarters of a city, street lighting and noise at night
are common causes of broken sleep.
""",
    ),
    (
        "clinical-reasoning-inference",
        "en",
        """# Clinical reasoning: inference from signs

"He must be home now, for the light is on" is a classic example of inference: we reason from a sign (the
light) to its most likely explanation (someone is home). Diagnosis works the same way. A clinician moves
from findings to the explanation that best accounts for them, then looks for evidence that could prove the
explanation wrong.

Good practice: list at least three possible explanations before settling on one, ask which finding would
distinguish them, and revisit the diagnosis when a new result does not fit. Premature closure, stopping
at the first plausible explanation, is one of the most common reasoning errors in medicine.
""",
    ),
    (
        "binhai-resident-health-services",
        "zh",
        """# 滨海新区居民的医疗服务

我想问我在滨海新区有房，能不能在这里看病和办理医保？在滨海新区有房并居住的居民，可以在所在街道的社区卫生服务中心
办理家庭医生签约。签约时带身份证、医保卡和房产证明或居住证明。

签约后，居民可以在社区卫生服务中心预约门诊、开具常用药、做慢性病随访和每年一次的健康体检。65岁以上老人每年可以
免费体检一次。需要转诊时，家庭医生可以帮助预约上级医院的专家门诊。
""",
    ),
    (
        "speech-recognition-in-clinics",
        "zh",
        """# 语音识别模型在诊所的使用

欢迎大家来体验语音识别模型。达摩院推出的语音识别模型可以把医生的口述转成文字，用于门诊病历和随访记录。
使用语音识别时，诊所应当在本地处理录音，不把患者的声音上传到外部服务器。

建议：在安静的环境里录音，离麦克风二十厘米左右说话；识别结果必须由医生核对后才能写入病历；
药名和剂量要特别检查，因为同音词容易识别错误。
""",
    ),
    (
        "fairness-in-health-care",
        "zh",
        """# 医疗资源分配中的公平与正义

正是因为存在绝对正义，所以我们接受现实中的相对正义。在医疗资源有限的时候，医院不能让每个人都得到同样多的资源，
但是要按照病情的轻重缓急来分配，这就是相对正义。不要因为现实的相对正义，就认为这个世界没有正义。

急诊分诊就是一个例子：病情危重的病人先看，病情稳定的病人等待。分诊标准应当公开、透明，对所有病人一视同仁。
""",
    ),
    (
        "brexit-medicine-supply",
        "zh",
        """# 英国脱欧对药品供应的影响

英国脱欧以前，药品在欧盟内部流通非常的方便。但是现在不同了：英国脱欧以后，欧盟内部完善的产业链的红利不再自动覆盖英国，
药品进出口需要报关和重新检验，一些药品出现了短缺。

对诊所的建议：常用药保持至少两周的库存；关注国家药品监管部门发布的短缺通知；必要时用同类药品替代，并告知病人。
""",
    ),
]


# ---------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN when empty."""
    xs = sorted(x for x in xs if x is not None and x == x)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def med(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and x == x]
    return float(statistics.median(xs)) if xs else float("nan")


def fmt(x: float | None, digits: int = 2, unit: str = "") -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}{unit}"


def ratio(a: float, b: float) -> float:
    return a / b if (a == a and b == b and b > 0) else float("nan")


def stream_ms(event_id: str) -> int:
    return int(str(event_id).split("-", 1)[0])


def epoch(ts: Any) -> float:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(p) for p in out]


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, their children...), from /proc."""
    kids = children(pid)
    return kids + [d for k in kids for d in descendants(k)]


def pss_mb(pid: int) -> float:
    """Proportional set size (MB): shared pages split between the processes that map them, so PSS adds up
    across a Celery parent and its forked children where RSS counts the shared pages in each."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_clips(names: list[str] | None) -> list[dict[str, Any]]:
    rows = {}
    with (SPEECH / "transcripts.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            rows[row["file"]] = row
    order = names or [n for n in CLIP_ORDER if n in rows] + sorted(set(rows) - set(CLIP_ORDER))
    clips = []
    for name in order:
        if name not in rows:
            sys.exit(f"no clip {name!r} in {SPEECH / 'transcripts.tsv'}")
        row = rows[name]
        lang = row["lang"] if row["lang"] in ("en", "zh") else None  # "zh+en": let ASR detect
        clips.append(
            {
                "file": name,
                "path": SPEECH / name,
                "lang": lang,
                "duration_s": float(row["duration_s"]),
                "reference": row["reference"],
            }
        )
    return clips


# ---------------------------------------------------------------------------------------------------
# the stack: redis, chroma, API, workers — every process ours, all stopped at exit
# ---------------------------------------------------------------------------------------------------
class Stack:
    def __init__(self, tmp: Path, env: dict[str, str], worker_env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.worker_env = worker_env
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.workers: list[str] = []
        self.api = ""
        self.host = socket.gethostname()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        path = self.tmp / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env or self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        self.logs[name] = path
        return proc

    def tail(self, name: str, n: int = 40) -> str:
        path = self.logs.get(name)
        if not path or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, name: str, timeout_s: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the session: Celery's pool children too
            proc.wait(timeout_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, timeout_s=20)

    # -- redis + chroma ---------------------------------------------------------------------------------
    def start_redis(self) -> str:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: install it (make install does) or pass --redis-url")
        port = free_port()
        self.spawn(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
        )
        url = f"redis://127.0.0.1:{port}/0"
        self._wait(lambda: redis.Redis.from_url(url, socket_timeout=1).ping(), 15, "redis-server", "redis")
        return url

    def start_chroma(self, kb_dir: Path) -> str:
        import httpx

        binary = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
        if binary is None:
            raise SystemExit("the `chroma` command is not installed (pip install medvoice[knowledge])")
        port = free_port()
        (kb_dir / "chroma").mkdir(parents=True, exist_ok=True)
        self.spawn(
            "chroma",
            [binary, "run", "--path", str(kb_dir / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
            env={**self.env, "ANONYMIZED_TELEMETRY": "False"},
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            for path in ("/api/v2/heartbeat", "/api/v1/heartbeat"):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + path, timeout=2).status_code == 200:
                        return True
            return False

        self._wait(up, 60, "chroma server", "chroma")
        return url

    def _wait(self, predicate: Any, timeout_s: float, what: str, proc: str | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if predicate():
                    return
            p = self.procs.get(proc or "")
            if proc and (p is None or p.poll() is not None):
                raise RuntimeError(f"{what} exited:\n{self.tail(proc)}")
            time.sleep(0.25)
        raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{self.tail(proc or '')}")

    # -- API + workers ----------------------------------------------------------------------------------
    def start_api(self, name: str = "api", env: dict[str, str] | None = None) -> str:
        """An API process (`name`, with `env` instead of the stack's); the first one is `self.api`."""
        import httpx

        port = free_port()
        argv = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        self.spawn(name, argv, env)
        url = f"http://127.0.0.1:{port}"
        self._wait(lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200, 60, f"the API ({name})", name)
        self.api = self.api or url
        return url

    def start_workers(self, topology: str, concurrency: int = 1) -> list[str]:
        from workers.core.settings import POOLS

        pools = list(POOLS) if topology == "pools" else ["all"]  # every queue /readyz asks for, `live` too
        tag = uuid.uuid4().hex[:4]
        names = []
        for pool in pools:
            node = f"bench{tag}-{pool}@{self.host}"
            self.spawn(
                f"worker-{pool}-{tag}",
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "worker",
                    "--pool",
                    pool,
                    "--concurrency",
                    str(concurrency),
                    "--name",
                    node,
                    "--loglevel",
                    "INFO",
                ],
                env=self.worker_env,
            )
            names.append(node)
        self.workers = [f"worker-{p}-{tag}" for p in pools]
        self.wait_ready(names, concurrency)
        return names

    def wait_ready(self, nodes: list[str], concurrency: int, timeout_s: float = 300) -> None:
        """/readyz 200 (every queue has a consumer with its models loaded) and, per node, every pool process
        has loaded its engines (readiness needs one)."""
        import httpx
        import redis

        from workers.celery_app import ENGINES_READY_PREFIX

        r = redis.Redis.from_url(self.env["MEDVOICE_REDIS_URL"], socket_timeout=2)

        def ready() -> bool:
            for w in self.workers:
                p = self.procs.get(w)
                if p is None or p.poll() is not None:
                    raise RuntimeError(f"{w} exited:\n{self.tail(w)}")
            if any(r.scard(ENGINES_READY_PREFIX + n) < concurrency for n in nodes):
                return False
            return httpx.get(self.api + "/readyz", timeout=10).status_code == 200

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tails = "\n".join(self.tail(w) for w in self.workers)
        raise RuntimeError(f"workers not ready after {timeout_s:.0f}s\n" + tails)

    def stop_workers(self) -> None:
        for w in self.workers:
            self.stop(w)
        self.workers = []

    def worker_rss(self) -> dict[str, float]:
        """RSS (MB) of each worker's pool processes (where the models live), summed per worker."""
        out = {}
        for w in self.workers:
            p = self.procs.get(w)
            if p is not None:
                kids = children(p.pid)
                out[w] = sum(rss_mb(k) for k in kids) if kids else float("nan")
        return out


# ---------------------------------------------------------------------------------------------------
# one turn through REST (Celery pipeline) and one in-process
# ---------------------------------------------------------------------------------------------------
class UploadError(RuntimeError):
    """An upload the API refused: its HTTP status and error code (the body's detail.code), for tallies."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Api:
    def __init__(self, base: str, token: str) -> None:
        import httpx

        self.base = base
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(60.0, read=700.0)
        )

    def close(self) -> None:
        self.client.close()

    def consultation(self) -> str:
        r = self.client.post("/v1/consultations", json={"title": "bench"})
        r.raise_for_status()
        return r.json()["id"]

    def turn(self, clip: dict[str, Any], consultation_id: str | None = None) -> dict[str, Any]:
        """Upload the clip, follow the SSE stream to the end, read the turn. Times are from the upload."""
        import httpx

        cid = consultation_id or self.consultation()
        data = clip["path"].read_bytes()
        t0 = time.perf_counter()
        r = self.client.post(
            f"/v1/consultations/{cid}/turns",
            files={"file": (clip["file"], data, "audio/wav")},
            data={"language": clip["lang"]} if clip["lang"] else {},
        )
        posted = time.perf_counter() - t0
        if r.status_code != 202:
            code = None
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = r.json()["detail"]["code"]
            raise UploadError(f"upload of {clip['file']}: HTTP {r.status_code} {r.text[:300]}", r.status_code, code)
        tid = r.json()["turn_id"]
        first: dict[str, float] = {}
        end_type = None
        last_id = None
        reconnects = 0
        while end_type is None:
            # A stream that breaks before a terminal event is resumed from the last id it delivered
            # (Last-Event-ID), as a browser's EventSource would; the reconnects are counted and reported.
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.client.stream("GET", f"/v1/turns/{tid}/events", headers=headers) as resp:
                    resp.raise_for_status()
                    etype = None
                    for line in resp.iter_lines():
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("event:"):
                            etype = line[6:].strip()
                        elif line == "" and etype:
                            first.setdefault(etype, time.perf_counter() - t0)
                            if etype in ("done", "error", "cancelled", "timeout"):
                                end_type = etype
                                break
                            etype = None
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if time.perf_counter() - t0 > 900:
                    raise RuntimeError(f"event stream of turn {tid} kept breaking") from exc
            if end_type is None:
                reconnects += 1
                time.sleep(0.05)
        turn = self.client.get(f"/v1/turns/{tid}")
        turn.raise_for_status()
        out = record(turn.json(), mode="celery", clip=clip)
        out.update(
            client_upload_s=posted,
            client_first_sentence_s=first.get("sentence"),
            client_first_audio_s=first.get("audio"),
            client_done_s=first.get(end_type or "done"),
            end_event=end_type,
            sse_reconnects=reconnects,
        )
        return out


def stream_figures(turn_id: str, created: float) -> dict[str, Any]:
    """From the turn's Redis stream (ids carry the Redis server's millisecond clock): when each stage began
    (its `status` event), the first sentence/audio and done, in seconds after the turn was created."""
    from workers.core import events

    marks: dict[str, float] = {}
    for event_id, e in events.read(turn_id):
        t = stream_ms(event_id) / 1000 - created
        key = f"status:{e.get('status')}" if e.get("type") == "status" else e.get("type")
        marks.setdefault(key, t)
    bounds = [marks.get(f"status:{s}") for s in ("transcribing", "retrieving", "generating", "speaking")]
    bounds.append(marks.get("done"))
    spans = {}
    for i, stage in enumerate(STAGE_NAMES):
        a, b = bounds[i], bounds[i + 1]
        spans[stage] = (b - a) if a is not None and b is not None else None
    return {
        "stream_first_sentence_s": marks.get("sentence"),
        "stream_first_audio_s": marks.get("audio"),
        "stream_done_s": marks.get("done"),
        "stream_start_s": bounds[0],
        "span": spans,
    }


def record(turn: dict[str, Any], mode: str, clip: dict[str, Any]) -> dict[str, Any]:
    timings = turn.get("timings") or {}
    out = {
        "mode": mode,
        "clip": clip["file"],
        "turn_id": turn["id"],
        "status": turn["status"],
        "error": turn.get("error"),
        "language": turn.get("language"),
        "transcript": turn.get("transcript"),
        "answer": turn.get("answer"),
        "citations": len(turn.get("citations") or []),
        "stage": {s: (timings.get(s) or {}).get("total_s") for s in STAGE_NAMES},
        "wall_s": timings.get("wall_s"),
        "pipeline_s": timings.get("pipeline_s"),
        "llm_tokens": (timings.get("llm") or {}).get("tokens"),
        "llm_first_sentence_s": (timings.get("llm") or {}).get("first_sentence_s"),
        "reply_audio_s": (timings.get("tts") or {}).get("audio_s"),
    }
    with contextlib.suppress(Exception):
        out.update(stream_figures(turn["id"], epoch(turn["created_at"])))
    return out


class InProcess:
    """The chain's stage functions called directly in this process, on turns created in SQL."""

    def __init__(self, owner_id: str) -> None:
        from workers import engines
        from workers.celery_app import celery_app
        from workers.tasks import turns as turn_tasks

        self.owner_id = owner_id
        self.stages = [celery_app.tasks[name] for name in turn_tasks.STAGES]
        t0 = time.perf_counter()
        for name in STAGE_NAMES:
            engines.get(name)
        self.load_s = time.perf_counter() - t0

    def turn(self, clip: dict[str, Any]) -> dict[str, Any]:
        from workers.core.db import session_scope
        from workers.core.records import Consultation, Turn, TurnStatus, new_id
        from workers.core.refs import to_ref
        from workers.core.settings import get_settings

        s = get_settings()
        cid, tid = new_id(), new_id()
        path = s.audio_dir / "in" / cid / f"{tid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip["path"], path)
        with session_scope(s.resolved_database_url) as db:
            db.add(Consultation(id=cid, owner_id=self.owner_id, title="bench in-process"))
            db.add(
                Turn(
                    id=tid,
                    consultation_id=cid,
                    index=1,
                    status=TurnStatus.queued,
                    input_kind="audio",
                    audio_ref=to_ref(s, path),
                    language=clip["lang"],
                    timings={"input": {"audio_s": clip["duration_s"], "bytes": path.stat().st_size}},
                )
            )
        t0 = time.perf_counter()
        state: Any = {"turn_id": tid}
        for task in self.stages:
            state = task(state)  # a Celery task called as a function runs here, no broker
        elapsed = time.perf_counter() - t0
        with session_scope(s.resolved_database_url) as db:
            t = db.get(Turn, tid)
            turn = {
                "id": t.id,
                "status": t.status.value,
                "error": t.error,
                "language": t.language,
                "transcript": t.transcript,
                "answer": t.answer,
                "citations": [c.n for c in t.citations],
                "timings": t.timings or {},
                "created_at": t.created_at,
            }
        out = record(turn, mode="inproc", clip=clip)
        out["call_s"] = elapsed
        return out


# ---------------------------------------------------------------------------------------------------
# setup: database, users, knowledge base
# ---------------------------------------------------------------------------------------------------
def make_users(db_url: str) -> str:
    from app import users as svc
    from workers.core.db import session_scope
    from workers.core.records import Role

    with session_scope(db_url) as db:
        svc.create_user(db, "bench-admin", BENCH_PASSWORD, Role.admin)
        clinician = svc.create_user(db, "bench-clinician", BENCH_PASSWORD, Role.clinician)
        db.flush()
        return clinician.id


def token(base: str, username: str) -> str:
    import httpx

    r = httpx.post(f"{base}/v1/auth/token", data={"username": username, "password": BENCH_PASSWORD}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def ingest(base: str, admin_token: str, tmp: Path, distractors: int) -> dict[str, Any]:
    """Topic documents over REST (each a rag.ingest on the rag pool), distractor passages as one rag.ingest."""
    import httpx

    from workers.celery_app import celery_app

    t0 = time.perf_counter()
    docs_dir = tmp / "kb-docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    chunks = 0
    for doc_id, lang, text in TOPIC_DOCS:
        r = httpx.post(
            f"{base}/v1/knowledge/documents",
            headers={"Authorization": f"Bearer {admin_token}"},
            files={"file": (f"{doc_id}.md", text.encode("utf-8"), "text/markdown")},
            data={"doc_id": doc_id, "source": "bench clinic handbook", "date": "2025-09-01", "tags": f"bench,{lang}"},
            timeout=700,
        )
        if r.status_code != 201:
            raise RuntimeError(f"knowledge upload {doc_id}: HTTP {r.status_code} {r.text[:300]}")
        chunks += r.json()["chunks"]
    lines = []
    if distractors > 0:
        medquad = EVAL / "rag" / "medquad" / "subset_passages.jsonl"
        zh = EVAL / "rag" / "zh_medicalgpt" / "corpus.jsonl"
        for path, n, src in ((medquad, distractors, "MedQuAD"), (zh, distractors // 2, "MedicalGPT zh")):
            if not path.exists():
                continue
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i >= n:
                        break
                    row = json.loads(line)
                    pid = str(row.get("passage_id") or i).replace("/", "_")
                    lines.append(
                        {
                            "id": f"{src.split()[0].lower()}-{pid}",
                            "title": row.get("focus") or src,
                            "text": row["text"],
                            "source": src,
                            "date": "2024-01-01",
                        }
                    )
    if lines:
        path = docs_dir / "distractors.jsonl"
        path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
        summary = celery_app.send_task("rag.ingest", kwargs={"paths": [str(path)]}).get(timeout=900)
        chunks += sum(d.get("chunks", 0) for d in summary.get("documents", []))
    return {
        "topic_docs": len(TOPIC_DOCS),
        "distractor_docs": len(lines),
        "chunks": chunks,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------------
def check_ok(rec: dict[str, Any]) -> dict[str, Any]:
    if rec["status"] != "done":
        log(f"  {rec['mode']} turn on {rec['clip']} ended {rec['status']}: {rec.get('error')}")
    return rec


def latency_phase(
    stack: Stack, api: Api, inproc: InProcess | None, clips: list[dict[str, Any]], runs: int, do_celery: bool
) -> dict[str, list[dict[str, Any]]]:
    res: dict[str, list[dict[str, Any]]] = {"celery": [], "inproc": [], "warmup": []}
    warm = clips[0]
    if do_celery:
        log(f"warm-up turn through the pipeline ({warm['file']})")
        res["warmup"].append(check_ok(api.turn(warm)))
    if inproc is not None:
        log(f"warm-up turn in-process ({warm['file']})")
        res["warmup"].append(check_ok(inproc.turn(warm)))
    for i in range(runs):
        clip = clips[i % len(clips)]
        order = ["celery", "inproc"] if i % 2 == 0 else ["inproc", "celery"]
        for mode in order:
            if mode == "celery" and do_celery:
                rec = check_ok(api.turn(clip))
            elif mode == "inproc" and inproc is not None:
                rec = check_ok(inproc.turn(clip))
            else:
                continue
            rec["run"] = i
            res[mode].append(rec)
            log(
                f"  run {i + 1}/{runs} {mode:6s} {clip['file']}: {rec['status']}, wall {fmt(rec['wall_s'])} s, "
                f"{rec['citations']} passages, {rec.get('llm_tokens') or 0} tokens"
            )
    return res


def throughput_phase(
    stack: Stack, base: str, tok: str, clips: list[dict[str, Any]], k: int, concurrency: int
) -> dict[str, Any]:
    log(f"throughput: starting one `--pool all` worker with --concurrency {concurrency}")
    t_load = time.perf_counter()
    stack.start_workers("all", concurrency)
    load_s = time.perf_counter() - t_load

    def one(clip: dict[str, Any]) -> dict[str, Any]:
        api = Api(base, tok)
        try:
            rec = api.turn(clip)
            rec["finished_at"] = time.perf_counter()
            return rec
        finally:
            api.close()

    with cf.ThreadPoolExecutor(max(k, concurrency)) as ex:
        log(f"  warm-up: {concurrency} turn(s) at once")
        list(ex.map(one, [clips[i % len(clips)] for i in range(concurrency)]))
        log(f"  {k} turns at once")
        t0 = time.perf_counter()
        recs = list(ex.map(one, [clips[i % len(clips)] for i in range(k)]))
    elapsed = max(r["finished_at"] for r in recs) - t0
    rss = stack.worker_rss()
    stack.stop_workers()
    done = sum(r["status"] == "done" for r in recs)
    for r in recs:
        check_ok(r)
        r.pop("finished_at", None)
    return {
        "concurrency": concurrency,
        "turns": k,
        "done": done,
        "elapsed_s": elapsed,
        "turns_per_min": 60 * done / elapsed if elapsed > 0 else float("nan"),
        "latency_median_s": med([r["client_done_s"] for r in recs]),
        "latency_p95_s": pct([r["client_done_s"] for r in recs], 95),
        "worker_rss_mb": sum(rss.values()),
        "ready_s": load_s,
        "records": recs,
    }


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
def stats(recs: list[dict[str, Any]], get: Any) -> tuple[float, float]:
    xs = [get(r) for r in recs if r["status"] == "done"]
    xs = [x for x in xs if x is not None]
    return med(xs), pct(xs, 95)


def report(
    console: Any,
    header: list[str],
    lat: dict[str, list[dict[str, Any]]] | None,
    thr: list[dict[str, Any]],
    stream_note: str | None,
) -> dict[str, Any]:
    from rich.table import Table

    summary: dict[str, Any] = {}
    for line in header:
        console.print(line, highlight=False, soft_wrap=True)
    if lat and (lat["celery"] or lat["inproc"]):
        cel, inp = lat["celery"], lat["inproc"]
        rows = [(s, lambda r, s=s: r["stage"][s]) for s in STAGE_NAMES]
        rows += [("sum of stages", lambda r: r["pipeline_s"]), ("wall (created → done)", lambda r: r["wall_s"])]
        t = Table(title="per-stage times from the Turn timings (s): median / p95", title_justify="left")
        for col in ("stage", "Celery (REST)", "in-process", "Celery/in-proc"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for name, get in rows:
            cm, cp = stats(cel, get)
            im, ip = stats(inp, get)
            r = ratio(cm, im)
            summary.setdefault("stages", {})[name] = {
                "celery_median": cm,
                "celery_p95": cp,
                "inproc_median": im,
                "inproc_p95": ip,
                "ratio": r,
            }
            t.add_row(name, f"{fmt(cm)} / {fmt(cp)}", f"{fmt(im)} / {fmt(ip)}", fmt(r, 3, "x"))
        console.print(t)

        t = Table(
            title="from the turn's event stream (s after the turn was created): median / p95", title_justify="left"
        )
        for col in ("figure", "Celery (REST)", "in-process", "Celery/in-proc"):
            t.add_column(col, justify="left" if col == "figure" else "right")
        srows = [
            ("first stage starts (queue wait)", lambda r: r.get("stream_start_s")),
            *[(f"{s} span (status → next status)", lambda r, s=s: (r.get("span") or {}).get(s)) for s in STAGE_NAMES],
            ("first sentence event", lambda r: r.get("stream_first_sentence_s")),
            ("first audio event", lambda r: r.get("stream_first_audio_s")),
            ("done event", lambda r: r.get("stream_done_s")),
        ]
        for name, get in srows:
            cm, cp = stats(cel, get)
            im, ip = stats(inp, get)
            summary.setdefault("stream", {})[name] = {
                "celery_median": cm,
                "celery_p95": cp,
                "inproc_median": im,
                "inproc_p95": ip,
                "ratio": ratio(cm, im),
            }
            t.add_row(name, f"{fmt(cm)} / {fmt(cp)}", f"{fmt(im)} / {fmt(ip)}", fmt(ratio(cm, im), 3, "x"))
        console.print(t)

        if cel:
            t = Table(
                title="client-measured over REST (s from the start of the upload): median / p95",
                title_justify="left",
                min_width=76,
            )
            t.add_column("figure")
            t.add_column("median", justify="right")
            t.add_column("p95", justify="right")
            for name, key in (
                ("upload answered (202)", "client_upload_s"),
                ("first `sentence` event", "client_first_sentence_s"),
                ("first `audio` event", "client_first_audio_s"),
                ("`done` event", "client_done_s"),
            ):
                m, p = stats(cel, lambda r, key=key: r.get(key))
                summary.setdefault("client", {})[name] = {"median": m, "p95": p}
                t.add_row(name, fmt(m), fmt(p))
            console.print(t)
            broke = sum(r.get("sse_reconnects") or 0 for r in cel)
            summary["sse_reconnects"] = broke
            if broke:
                console.print(
                    f"[yellow]the API's event stream broke {broke} time(s) in {len(cel)} turns[/yellow] and "
                    "was resumed with Last-Event-ID (see api.log with --keep)",
                    soft_wrap=True,
                )
        per_clip = Table(title="per run", title_justify="left")
        for col in ("run", "mode", "clip", "lang", "status", "passages", "tokens", "wall s", "1st audio s"):
            per_clip.add_column(col)
        for r in sorted(cel + inp, key=lambda r: (r.get("run", 0), r["mode"])):
            per_clip.add_row(
                str(r.get("run", 0) + 1),
                r["mode"],
                r["clip"],
                str(r.get("language")),
                r["status"],
                str(r["citations"]),
                str(r.get("llm_tokens") or "-"),
                fmt(r["wall_s"]),
                fmt(r.get("client_first_audio_s") or r.get("stream_first_audio_s")),
            )
        console.print(per_clip)
        failed = [r for r in cel + inp if r["status"] != "done"]
        if failed:
            console.print(
                f"[red]{len(failed)} turn(s) did not finish:[/red] "
                + "; ".join(f"{r['mode']} {r['clip']}: {r.get('error')}" for r in failed),
                soft_wrap=True,
            )
        if stream_note:
            console.print(stream_note, soft_wrap=True)
    if thr:
        t = Table(title="throughput: K uploads at once, one `--pool all` worker", title_justify="left")
        for col in (
            "pool processes",
            "turns done",
            "elapsed s",
            "turns/min",
            "latency median / p95 s",
            "models ready s",
            "pool RSS MB",
        ):
            t.add_column(col, justify="right")
        for x in thr:
            t.add_row(
                str(x["concurrency"]),
                f"{x['done']}/{x['turns']}",
                fmt(x["elapsed_s"], 1),
                fmt(x["turns_per_min"], 2),
                f"{fmt(x['latency_median_s'], 1)} / {fmt(x['latency_p95_s'], 1)}",
                fmt(x["ready_s"], 1),
                fmt(x["worker_rss_mb"], 0),
            )
        console.print(t)
        if len(thr) == 2:
            r = ratio(thr[1]["turns_per_min"], thr[0]["turns_per_min"])
            summary["throughput_ratio"] = r
            console.print(
                f"throughput ratio, 2 processes / 1: {fmt(r, 2, 'x')} "
                f"(on {os.cpu_count()} cores; each process runs llama.cpp with MEDVOICE_LLM_THREADS threads)"
            )
    return summary


def describe_models(s: Any) -> str:
    from workers import modelfiles

    parts = []
    with contextlib.suppress(Exception):
        parts.append(f"ASR {modelfiles.resolve_asr(s).name} (beam {s.asr_beam_size})")
    with contextlib.suppress(Exception):
        parts.append(f"LLM {modelfiles.resolve_llm(s).name}")
    with contextlib.suppress(Exception):
        if s.tts_backend == "piper":
            parts.append(f"TTS piper {modelfiles.resolve_piper(s)[0].name} (speed {s.tts_speed})")
        else:
            parts.append(f"TTS {s.tts_backend}")
    parts.append(f"embedder {s.kb_embedder}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6, help="measured uploads per mode (celery, in-process)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated: celery,inproc,throughput")
    ap.add_argument("--throughput-turns", type=int, default=6, help="K: uploads sent at once per configuration")
    ap.add_argument("--clips", help="comma-separated clip file names (default: all, English and Chinese alternating)")
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=int(os.environ.get("MEDVOICE_CONSULT_MAX_TOKENS") or 96),
        help="MEDVOICE_CONSULT_MAX_TOKENS for every process (answer length; default 96)",
    )
    ap.add_argument(
        "--topology",
        choices=("pools", "all"),
        default="pools",
        help="latency phases: one worker per pool (as deployed) or one `--pool all` worker",
    )
    ap.add_argument(
        "--stream-tts",
        choices=("config", "on", "off"),
        default="config",
        help="the workers' MEDVOICE_CONSULT_STREAM_TTS (in-process runs are always sequential)",
    )
    ap.add_argument(
        "--distractors",
        type=int,
        default=40,
        help="MedQuAD passages (and half as many Chinese ones) added to the knowledge base",
    )
    ap.add_argument("--redis-url", help="use this Redis instead of a private redis-server (no other workers on it!)")
    ap.add_argument("--json", type=Path, help="also write every figure and per-run record here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = ap.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if bad := set(phases) - set(PHASES):
        ap.error(f"unknown phase(s) {', '.join(sorted(bad))}; choose from {', '.join(PHASES)}")
    if not (SPEECH / "transcripts.tsv").exists():
        sys.exit(f"evaluation speech not found at {SPEECH} (../shared/eval-data beside the clone; see its README)")
    clips = load_clips([c.strip() for c in args.clips.split(",")] if args.clips else None)

    # SIGTERM runs the same cleanup as Ctrl-C (and Ctrl-C works even where the shell started us ignoring it).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t_start = time.perf_counter()

    # The environment every process gets: a private data dir, database, Redis and Chroma server; the models
    # where `medvoice models prepare` put them.
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from workers.core.settings import Settings, get_settings

    models_dir = os.environ.get("MEDVOICE_MODELS_DIR") or str(get_settings().model_root.resolve())
    has_stream_setting = "consult_stream_tts" in Settings.model_fields
    tmp = Path(tempfile.mkdtemp(prefix="medvoice-bench-consult-"))
    data = tmp / "data"
    stack: Stack | None = None
    api: Api | None = None
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        env = {
            **os.environ,
            "MEDVOICE_DATA_DIR": str(data),
            "MEDVOICE_MODELS_DIR": models_dir,
            "MEDVOICE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "MEDVOICE_CONSULT_MAX_TOKENS": str(args.max_tokens),
            "MEDVOICE_KB_DIR": str(data / "knowledge"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("MEDVOICE_KB_CHROMA_URL", None)
        stack = Stack(tmp, env, env)
        if args.redis_url:
            env["MEDVOICE_REDIS_URL"] = args.redis_url
        else:
            env["MEDVOICE_REDIS_URL"] = stack.start_redis()
        log("starting the Chroma server")
        env["MEDVOICE_KB_CHROMA_URL"] = stack.start_chroma(data / "knowledge")
        worker_env = dict(env)
        if has_stream_setting and args.stream_tts != "config":
            worker_env["MEDVOICE_CONSULT_STREAM_TTS"] = "true" if args.stream_tts == "on" else "false"
        stack.worker_env = worker_env
        workers_stream = None
        if has_stream_setting:  # what the workers will run with (their env, plus a .env file if any)
            workers_stream = (args.stream_tts == "on") if args.stream_tts != "config" else Settings().consult_stream_tts
        # This process: the same settings, but the in-process runs are sequential (nothing to stream to).
        os.environ.update(env)
        if has_stream_setting:
            os.environ["MEDVOICE_CONSULT_STREAM_TTS"] = "false"
        get_settings.cache_clear()
        s = get_settings()

        from app.migrate import upgrade

        upgrade(s.resolved_database_url)
        clinician_id = make_users(s.resolved_database_url)
        log("starting the API")
        base = stack.start_api()
        admin_tok, clin_tok = token(base, "bench-admin"), token(base, "bench-clinician")

        latency = None
        inproc = None
        kb: dict[str, Any] | None = None
        if "celery" in phases or "inproc" in phases:
            log(f"starting workers ({args.topology}) and waiting for their models")
            t = time.perf_counter()
            stack.start_workers(args.topology, 1)
            results["workers_ready_s"] = time.perf_counter() - t
            log("ingesting the knowledge base through the rag pool")
            kb = ingest(base, admin_tok, tmp, args.distractors)
            if "inproc" in phases:
                log("loading the engines in this process")
                inproc = InProcess(clinician_id)
                results["inproc_load_s"] = inproc.load_s
            api = Api(base, clin_tok)
            latency = latency_phase(stack, api, inproc, clips, args.runs, "celery" in phases)
            results["latency_worker_rss_mb"] = stack.worker_rss()
            stack.stop_workers()
            if inproc is not None:  # give the memory back before the throughput workers load theirs
                from workers import engines

                engines.reset()
                inproc = None
                gc.collect()
        thr: list[dict[str, Any]] = []
        if "throughput" in phases:
            for conc in (1, 2):
                if kb is None:  # no latency phase: the first throughput worker ingests
                    stack.start_workers("all", 1)
                    kb = ingest(base, admin_tok, tmp, args.distractors)
                    stack.stop_workers()
                thr.append(throughput_phase(stack, base, clin_tok, clips, args.throughput_turns, conc))

        load_end = os.getloadavg()
        stream_desc = (
            "setting absent"
            if not has_stream_setting
            else f"{'on' if workers_stream else 'off'} in the workers ({args.stream_tts}), off in-process"
        )
        clip_desc = ", ".join(
            f"{c['file']} ({c['lang'] or 'detect'}, {c['duration_s']:.1f} s)" for c in clips[: max(args.runs, 1)]
        )
        header = [
            f"[bold]medvoice consultation benchmark[/bold] — {started}, {time.perf_counter() - t_start:.0f} s; "
            f"{platform.node()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
            f"load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, at end "
            f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} "
            "(other work on the machine inflates every figure)",
            f"models: {describe_models(s)}",
            f"threads: asr {s.asr_threads}, rag {s.rag_threads}, llm {s.llm_threads}, tts {s.tts_threads}; "
            f"[bold]answer limit MEDVOICE_CONSULT_MAX_TOKENS={args.max_tokens}[/bold] (set by this bench to keep runs "
            f"short; deployed default {s.llm_max_tokens}); top_k {s.consult_top_k}; streaming TTS: {stream_desc}",
            f"stack: private redis ({'--redis-url' if args.redis_url else 'redis-server'}), SQLite, Chroma server, "
            f"API subprocess; latency workers: {args.topology} (concurrency 1); one fresh consultation per turn "
            f"(no history)",
            f"knowledge base: {kb['topic_docs']} topic documents (REST) + {kb['distractor_docs']} distractor passages "
            f"(rag.ingest), {kb['chunks']} chunks, {kb['seconds']:.1f} s"
            if kb
            else "knowledge base: -",
            f"clips: {clip_desc}; "
            f"{args.runs} measured runs per mode after one warm-up each, Celery and in-process alternating",
        ]
        if "workers_ready_s" in results:
            rss = results.get("latency_worker_rss_mb", {})
            header.append(
                f"workers' models ready {results['workers_ready_s']:.1f} s after start; in-process engines "
                f"loaded in {results.get('inproc_load_s', float('nan')):.1f} s; worker RSS MB: "
                + ", ".join(f"{k.split('-')[1]} {v:.0f}" for k, v in rss.items())
            )
        note = None
        if latency and latency["inproc"] and latency["celery"] and workers_stream:
            note = (
                "note: the workers stream TTS (sentences are spoken while the LLM generates) and the in-process "
                "runs cannot, so the llm/tts/wall ratios include that overlap and CPU contention; asr and rag "
                "are the queue overhead. Run with --stream-tts off for the pure queue overhead."
            )
        summary = report(console, header, latency, thr, note)
        results.update(
            summary=summary,
            header=header,
            kb=kb,
            latency=latency,
            throughput=[{k: v for k, v in x.items()} for x in thr],
        )
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
        tear_down(stack, tmp, args.keep, api)


def leave_after(run: Callable[[], None]) -> None:
    """Run a bench. Everything it started is stopped by the time an error reaches here; leave at once rather
    than let a Celery/kombu client interrupted mid-call retry the (stopped) private Redis at interpreter exit."""
    try:
        run()
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    except Exception:  # noqa: BLE001 - cleaned up already: print and leave
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def show_worker_logs(stack: Stack | None) -> None:
    """After a failure: the last lines of the API's and workers' logs, which say why."""
    for name in list(stack.procs) if stack is not None else []:
        if name.startswith(("worker", "api")):
            print(f"--- last lines of {name}.log ---\n{stack.tail(name, 25)}", file=sys.stderr)


def tear_down(stack: Stack | None, tmp: Path, keep: bool, *clients: Any) -> None:
    """Stop everything the bench started (its clients first), and remove its files unless asked to keep them."""
    for client in clients:
        if client is not None:
            client.close()
    if stack is not None:
        stack.close()
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    leave_after(run)


if __name__ == "__main__":
    main()
