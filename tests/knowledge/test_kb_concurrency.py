"""Several processes on one knowledge base: a rag worker answers queries while the admin CLI ingests.

Chroma's embedded PersistentClient is not process-safe (a second process keeps a stale HNSW index and two
writers can corrupt it), so multi-process deployments use Chroma's own server (`chroma run`, started by
`medvoice kb server`). Here: a real Chroma server, a real rag worker process and the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.slow

NEW_DOC_FOUND_WITHIN_S = 5.0  # after `kb ingest` returns, the worker's next queries find the new document


@pytest.fixture
def chroma_server(tmp_path):
    binary = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if binary is None:
        pytest.fail("the `chroma` command (chromadb) is not installed")
    port = free_port()
    log = open(tmp_path / "chroma.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    import httpx

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, "chroma server")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def _docs(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        body = " ".join(f"Routine clinic note {i}.{j} about follow-up visits and blood tests." for j in range(25))
        (folder / f"note{i:03d}.md").write_text(f"# Clinic note {i}\n\n## Follow-up\n{body}\n")


def test_new_document_found_while_cli_ingests_and_nothing_corrupted(chroma_server, start_worker, tmp_path):
    from workers.celery_app import celery_app

    env = {
        "MEDVOICE_KB_CHROMA_URL": chroma_server,
        "MEDVOICE_KB_DIR": str(tmp_path / "kb"),
        "MEDVOICE_DATA_DIR": str(tmp_path / "data"),
    }
    cli_env = {**os.environ, **env}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "kb", *args], env=cli_env, capture_output=True, text=True, timeout=600
        )

    base = tmp_path / "base"
    base.mkdir()
    (base / "gout.md").write_text(
        "# Gout\n\n## Treatment\nColchicine treats an acute gout attack. Allopurinol prevents further attacks.\n"
    )
    r = cli("ingest", str(base), "--json")
    assert r.returncode == 0, r.stderr
    start_worker("rag", timeout_s=120, MEDVOICE_KB_REFRESH_INTERVAL_S="0.2", **env)

    batch = tmp_path / "batch"
    _docs(batch, 40)
    (batch / "zz-new.md").write_text(
        "# Zelmoravine\n\n## Dosing\nZelmoravine is given once weekly for refractory plaque psoriasis.\n"
    )

    results: list[tuple[float, str, dict | str]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            for q in ("colchicine for acute gout", "zelmoravine weekly psoriasis"):
                t = time.monotonic()
                try:
                    out = celery_app.send_task("rag.search", kwargs={"query": q, "k": 3}).get(timeout=30)
                    results.append((t, q, out))
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                    results.append((t, q, f"{type(exc).__name__}: {exc}"))

    th = threading.Thread(target=ask, daemon=True)
    th.start()
    t_start = time.monotonic()
    r = cli("ingest", str(batch), "--json")  # another process writes while the worker answers
    t_done = time.monotonic()
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["added"] == 41 and summary["failed"] == 0

    def found() -> bool:
        return any(
            t >= t_done
            and q.startswith("zelmoravine")
            and isinstance(o, dict)
            and o["hits"]
            and o["hits"][0]["title"] == "Zelmoravine"
            for t, q, o in results
        )

    wait_for(found, NEW_DOC_FOUND_WITHIN_S, "the new document in the rag worker's answers")
    found_at = min(
        t
        for t, q, o in results
        if t >= t_done
        and q.startswith("zelmoravine")
        and isinstance(o, dict)
        and o["hits"]
        and o["hits"][0]["title"] == "Zelmoravine"
    )
    stop.set()
    th.join(35)

    during = [x for x in results if t_start <= x[0] <= t_done]
    assert len(during) >= 4, "the worker kept answering during the ingest"
    errors = [o for _, _, o in results if not isinstance(o, dict) or "error" in o]
    assert errors == []
    # the existing document was found by every query, before, during and after the ingest
    gout = [o for _, q, o in results if q.startswith("colchicine")]
    assert gout and all(o["hits"] and o["hits"][0]["title"] == "Gout" for o in gout)

    # nothing corrupted: every document is listed with its chunks, and the store holds exactly those chunks
    stats = celery_app.send_task("rag.stats").get(timeout=30)
    listed = celery_app.send_task("rag.list").get(timeout=30)
    assert stats["documents"] == len(listed) == 42
    assert stats["chunks"] == sum(d["chunks"] for d in listed) == stats["bm25_chunks"]
    r = cli("stats", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["chunks"] == stats["chunks"]
    print(
        f"new document found {max(0.0, found_at - t_done):.2f}s after ingest returned; {len(during)} queries "
        f"answered during a {t_done - t_start:.1f}s ingest"
    )
