"""A whole spoken consultation on this machine's processes only: Redis, the API and an `all`-pools worker are
started here, a clinician signs in, the knowledge base gets a page, a spoken question is uploaded and answered.
Run by test_offline.py inside a network namespace with only loopback; prints a JSON summary, exits 0 on success.

    python -m tests.faults.offline_run WORKDIR
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def main(workdir: Path) -> dict:
    from tests.faults.procs import Redis, Stack

    rd = Redis(workdir)
    rd.start()
    os.environ["MEDVOICE_REDIS_URL"] = rd.url  # before the Celery app is made: it reads the URL once
    stack = Stack(workdir, rd.url, MEDVOICE_KB_REFRESH_INTERVAL_S="0")
    try:
        stack.start_api()
        stack.start_worker()
        stack.wait_ready()
        return consult(stack)
    finally:
        stack.stop()
        rd.stop()


def consult(stack) -> dict:
    import httpx

    from tests.consultation.shared import KB_DOC
    from workers.celery_app import celery_app

    src = stack.root / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    ingested = celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    question = "How should an adult with a middle ear infection be treated?"
    spoken = celery_app.send_task("tts.synthesize", kwargs={"text": question, "speed": 1.0}).get(timeout=180)
    wav = (stack.root / "data" / spoken["audio_ref"]).read_bytes()

    base, h = stack.base, stack.user()
    cid = httpx.post(f"{base}/v1/consultations", json={"title": "offline"}, headers=h).json()["id"]
    r = httpx.post(
        f"{base}/v1/consultations/{cid}/turns",
        files={"file": ("q.wav", wav, "audio/wav")},
        data={"language": "en"},
        headers=h,
        timeout=60,
    )
    r.raise_for_status()
    tid = r.json()["turn_id"]
    stream = httpx.get(f"{base}/v1/turns/{tid}/events", headers=h, timeout=600).text
    turn = httpx.get(f"{base}/v1/turns/{tid}", headers=h).json()
    audio = httpx.get(f"{base}/v1/turns/{tid}/audio", headers=h)
    return {
        "ingested": ingested["added"],
        "events": [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")],
        "status": turn["status"],
        "error": turn["error"],
        "transcript": turn["transcript"],
        "answer": turn["answer"],
        "citations": len(turn["citations"]),
        "reply_audio_bytes": len(audio.content) if audio.status_code == 200 else 0,
    }


if __name__ == "__main__":
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="medvoice-offline-"))
    out = main(work)
    print("OFFLINE-RESULT " + json.dumps(out))
    sys.exit(0 if out["status"] == "done" else 1)
