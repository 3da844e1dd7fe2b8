"""What the fault tests read: the event stream as a client sees it, and the knowledge page they ingest."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import wait_for
from tests.consultation.shared import KB_DOC


def sse(api, turn_id: str, headers: dict) -> list[tuple[str, dict]]:
    """The turn's whole event stream as a client reads it: [(type, data)], to the terminal event."""
    r = api.get(f"/v1/turns/{turn_id}/events", headers=headers)
    assert r.status_code == 200, r.text
    out = []
    for block in r.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def ingest(settings) -> None:
    """The formulary page into the knowledge base, through a rag worker's rag.ingest."""
    from workers.celery_app import celery_app

    src = Path(settings.data_dir) / "kb-src" / "otitis.md"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(KB_DOC, encoding="utf-8")
    summary = celery_app.send_task("rag.ingest", args=[[str(src)]], kwargs={"source": "formulary"}).get(timeout=180)
    assert summary["added"] == 1 and summary["failed"] == 0, summary
    wait_for(lambda: (Path(settings.kb_dir) / "vocabulary.json").exists(), 60, "the KB vocabulary")
