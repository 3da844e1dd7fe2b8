"""`medvoice backup` / `medvoice restore`, as real processes over a real SQLite database and a real Chroma
directory: a consultation backed up from one data dir reads back through the API from a fresh one."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import users as svc
from app.cli import backup as bk
from app.main import create_app
from app.migrate import downgrade, upgrade
from tests.conftest import ROOT
from workers.core.db import get_engine, session_scope
from workers.core.records import Citation, Consultation, Role, Turn, TurnStatus, new_id
from workers.core.settings import Settings

PASSWORD = "correct-horse-battery"


def _settings(root: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{root / 'medvoice.db'}",
        data_dir=root / "data",
        kb_dir=root / "data" / "knowledge",
        consult_reap_interval_s=0,
    )


def _env(s: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "MEDVOICE_DATABASE_URL": s.resolved_database_url,
        "MEDVOICE_DATA_DIR": str(s.data_dir),
        "MEDVOICE_KB_DIR": str(s.kb_dir),
    }


def medvoice(s: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=_env(s), capture_output=True, text=True, timeout=300
    )


def _chroma(path: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))


@pytest.fixture
def source(tmp_path: Path) -> dict:
    """A data dir with a clinician, a consultation whose turn has an answer and citations, and a knowledge
    base: a Chroma collection (explicit vectors: no model needed) and an uploaded document beside it."""
    s = _settings(tmp_path / "a")
    upgrade(s.resolved_database_url)
    with session_scope(s.resolved_database_url) as db:
        ann = svc.create_user(db, "ann", PASSWORD, Role.clinician)
        c = Consultation(id=new_id(), owner_id=ann.id, title="follow-up")
        db.add(c)
        db.flush()
        t = Turn(
            id=new_id(),
            consultation_id=c.id,
            index=1,
            status=TurnStatus.done,
            input_kind="text",
            question_text="first-line antibiotic for otitis media?",
            answer="Amoxicillin 500 mg three times daily for 5 days [1].",
            language="en",
        )
        db.add(t)
        db.flush()
        db.add(Citation(turn_id=t.id, n=1, chunk_id="otitis#0", document_id="otitis", title="Otitis", score=0.65))
        ids = {"consultation": c.id, "turn": t.id}
    col = _chroma(s.kb_dir / "chroma").get_or_create_collection("medvoice_kb__test", embedding_function=None)
    col.add(ids=["otitis#0"], embeddings=[[0.1, 0.2, 0.3]], documents=["Amoxicillin 500 mg"], metadatas=[{"d": 1}])
    (s.kb_dir / "uploads").mkdir(parents=True)
    (s.kb_dir / "uploads" / "otitis.md").write_text("# Otitis\nAmoxicillin 500 mg.\n", encoding="utf-8")
    get_engine.cache_clear()
    return {"settings": s, **ids}


def _read_back(s: Settings, ids: dict) -> dict:
    with TestClient(create_app(s)) as c:
        token = c.post("/v1/auth/token", data={"username": "ann", "password": PASSWORD}).json()["access_token"]
        r = c.get(f"/v1/consultations/{ids['consultation']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_backup_then_restore_into_a_fresh_data_dir(source, tmp_path):
    a = source["settings"]
    out = tmp_path / "backup"
    done = medvoice(a, "backup", str(out))
    assert done.returncode == 0, done.stderr
    assert f"at revision {bk._code_revisions()[1]}" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    _known, head = bk._code_revisions()
    assert manifest["database"]["dialect"] == "sqlite" and manifest["database"]["alembic_revision"] == head
    assert manifest["database"]["counts"] == {
        "users": 1,
        "consultations": 1,
        "turns": 1,
        "citations": 1,
        "audit_events": 0,
    }
    assert manifest["versions"]["medvoice"] and manifest["versions"]["chromadb"]
    assert manifest["knowledge"]["included"] and manifest["knowledge"]["quiesced"]
    assert "kb/chroma/chroma.sqlite3" in manifest["files"] and "kb/uploads/otitis.md" in manifest["files"]
    assert not any(name.endswith(("-wal", "-shm", ".lock")) for name in manifest["files"])
    for rel, facts in manifest["files"].items():
        assert bk.sha256_of(out / rel) == facts["sha256"]

    b = _settings(tmp_path / "b")  # fresh: no database, no knowledge base
    done = medvoice(b, "restore", str(out))
    assert done.returncode == 0, done.stderr
    assert "users 1, consultations 1, turns 1, citations 1" in done.stdout
    got = _read_back(b, source)
    assert got["title"] == "follow-up"
    (turn,) = got["turns"]
    assert turn["answer"].startswith("Amoxicillin 500 mg") and turn["citations"][0]["document_id"] == "otitis"
    restored = _chroma(b.kb_dir / "chroma").get_collection("medvoice_kb__test").get(ids=["otitis#0"])
    assert restored["documents"] == ["Amoxicillin 500 mg"]
    assert (b.kb_dir / "uploads" / "otitis.md").read_text(encoding="utf-8").startswith("# Otitis")


def test_an_older_schema_is_restored_and_migrated(source, tmp_path):
    a = source["settings"]
    downgrade(a.resolved_database_url, "0003")
    get_engine.cache_clear()
    out = tmp_path / "backup"
    assert medvoice(a, "backup", str(out)).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["database"]["alembic_revision"] == "0003"
    b = _settings(tmp_path / "b")
    done = medvoice(b, "restore", str(out))
    assert done.returncode == 0, done.stderr
    assert f"revision {bk._code_revisions()[1]}" in done.stdout
    assert _read_back(b, source)["turns"][0]["question"] == "first-line antibiotic for otitis media?"


def test_a_damaged_backup_is_refused_before_anything_changes(source, tmp_path):
    out = tmp_path / "backup"
    assert medvoice(source["settings"], "backup", str(out)).returncode == 0
    doc = out / "kb" / "uploads" / "otitis.md"
    doc.write_text(doc.read_text() + "tampered\n")
    b = _settings(tmp_path / "b")
    done = medvoice(b, "restore", str(out))
    assert done.returncode == 1 and "kb/uploads/otitis.md does not match its SHA-256" in done.stderr
    assert not Path(b.resolved_database_url.removeprefix("sqlite:///")).exists() and not b.kb_dir.exists()


def test_refusals(source, tmp_path):
    a = source["settings"]
    out = tmp_path / "backup"
    assert medvoice(a, "backup", str(out)).returncode == 0
    again = medvoice(a, "backup", str(out))
    assert again.returncode == 1 and "not an empty directory" in again.stderr
    # Restoring over a live data dir needs --force, and then sets the old one aside instead of deleting it.
    over = medvoice(a, "restore", str(out))
    assert over.returncode == 1 and "already exists" in over.stderr and "--force" in over.stderr
    forced = medvoice(a, "restore", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "medvoice.db.before-restore-" in forced.stdout and "knowledge.before-restore-" in forced.stdout
    assert list(a.kb_dir.parent.glob("knowledge.before-restore-*"))
    # A backup from a newer schema than this code knows is refused.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["database"]["alembic_revision"] = "9999"
    (out / "manifest.json").write_text(json.dumps(manifest))
    newer = medvoice(_settings(tmp_path / "c"), "restore", str(out))
    assert newer.returncode == 1 and "unknown here" in newer.stderr
    assert medvoice(a, "restore", str(tmp_path)).returncode == 1  # no manifest


def test_a_knowledge_base_held_by_a_worker(source, tmp_path):
    """While a process holds the embedded store's lock (a rag worker), backup copies it live and says so;
    restore refuses to replace it."""
    a = source["settings"]
    with (a.kb_dir / bk.KB_LOCK).open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = tmp_path / "backup"
        done = medvoice(a, "backup", str(out))
        assert done.returncode == 0 and "copied live" in done.stderr
        assert json.loads((out / "manifest.json").read_text())["knowledge"]["quiesced"] is False
        refused = medvoice(a, "restore", str(out), "--force")
        assert refused.returncode == 1 and "stop the rag workers" in refused.stderr


@pytest.mark.postgres
def test_postgresql_round_trip(postgres_url, tmp_path):
    """pg_dump → pg_restore into a second, empty database (skipped without a server or the client tools)."""
    import shutil
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump / pg_restore not on PATH")
    upgrade(postgres_url)
    a = Settings(database_url=postgres_url, data_dir=tmp_path / "a", consult_reap_interval_s=0)
    with session_scope(postgres_url) as db:
        ann = svc.create_user(db, "ann", PASSWORD, Role.clinician)
        c = Consultation(id=new_id(), owner_id=ann.id, title="pg")
        db.add(c)
        cid = c.id
    out = tmp_path / "backup"
    done = medvoice(a, "backup", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "db" / "medvoice.pgdump").is_file()
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    second = f"medvoice_restore_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{second}"'))
    try:
        b_url = make_url(postgres_url).set(database=second).render_as_string(hide_password=False)
        b = Settings(database_url=b_url, data_dir=tmp_path / "b", consult_reap_interval_s=0)
        done = medvoice(b, "restore", str(out))
        assert done.returncode == 0, done.stderr
        assert _read_back(b, {"consultation": cid})["title"] == "pg"
    finally:
        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{second}" WITH (FORCE)'))
        admin.dispose()
