"""The knowledge base's Chroma server down (`medvoice kb server`, settings kb_chroma_url): retrieval answers a
typed error naming the knowledge base, and a turn asked meanwhile ends `error` saying why; nothing else breaks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_for
from tests.consultation.shared import worker_env
from tests.faults.helpers import ingest, sse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chroma(settings, tmp_path_factory):
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # the venv's `chroma`
    if shutil.which("chroma", path=path) is None:
        pytest.skip("the `chroma` command is not installed")
    port = free_port()
    env = {**os.environ, **worker_env(settings), "PATH": path}
    log = open(tmp_path_factory.mktemp("chroma") / "chroma.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "kb", "server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 90, "the Chroma server")
    yield {"url": f"http://127.0.0.1:{port}", "proc": proc}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    log.close()


@pytest.fixture(scope="module")
def rag_worker(start_module_worker, settings, chroma):
    w = start_module_worker("rag", timeout_s=240, MEDVOICE_KB_CHROMA_URL=chroma["url"], **worker_env(settings))
    ingest(settings)
    return w


def test_chroma_down_is_a_typed_error_and_the_turn_says_why(api, tokens, settings, chroma, rag_worker, consultation):
    from workers.celery_app import celery_app
    from workers.core.errors import MedvoiceError

    question = "How should an adult with a middle ear infection be treated?"
    hits = celery_app.send_task("rag.search", args=[question]).get(timeout=60)["hits"]
    assert hits and "amoxicillin" in hits[0]["text"]

    os.killpg(chroma["proc"].pid, signal.SIGTERM)
    chroma["proc"].wait(20)

    with pytest.raises(MedvoiceError) as failed:
        celery_app.send_task("rag.search", args=[question]).get(timeout=120)
    assert failed.value.code == "kb_unavailable", (failed.value.code, failed.value.message)
    assert "knowledge base" in failed.value.message

    h = tokens["ann"]
    r = api.post(f"/v1/consultations/{consultation}/turns", json={"text": question}, headers=h)
    assert r.status_code == 202, r.text
    tid = r.json()["turn_id"]
    stream = sse(api, tid, h)
    last_type, last = stream[-1]
    assert last_type == "error" and last["stage"] == "rag" and last["code"] == "kb_unavailable", stream
    turn = api.get(f"/v1/turns/{tid}", headers=h).json()
    assert turn["status"] == "error" and turn["error"].startswith("rag: kb_unavailable:"), turn
    assert "knowledge base" in turn["error"] and turn["citations"] == []
    # The worker survives: it still answers.
    assert celery_app.send_task("rag.ping").get(timeout=30)
    assert rag_worker.proc.poll() is None
