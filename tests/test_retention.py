"""Audio retention, with real SQLite, a real data directory, the real app and a real `medvoice` process:
audio past its age goes (uploads, clips, replies, pieces, strays of re-delivered stages), the text records
stay, the refs are cleared, and every purge is audited."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import users as svc
from app.main import create_app
from tests.conftest import ROOT, wait_for
from workers import retention
from workers.core import events
from workers.core.db import session_scope
from workers.core.records import AuditEvent, Consultation, Role, Turn, TurnStatus, new_id, utcnow

PASSWORD = "correct-horse-battery"
OLD_DAYS = 40


def _file(path: Path, age_days: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + os.urandom(60))
    if age_days:
        t = time.time() - age_days * 86400
        os.utime(path, (t, t))
        os.utime(path.parent, (t, t))
    return path


@pytest.fixture
def stored(settings):
    """An old finished turn with its upload, clips, reply and a stray clip; a recent finished turn; an old turn
    still running; old and recent stray pieces and ad-hoc speech."""
    audio = settings.audio_dir
    with session_scope(settings.resolved_database_url) as db:
        ann = svc.create_user(db, "ann", PASSWORD, Role.clinician)
        c = Consultation(id=new_id(), owner_id=ann.id)
        db.add(c)
        db.flush()
        turns = {}
        for name, index, status, age in (
            ("old", 1, TurnStatus.done, OLD_DAYS),
            ("new", 2, TurnStatus.done, 0),
            ("running", 3, TurnStatus.generating, OLD_DAYS),
        ):
            tid = new_id()
            upload = _file(audio / "in" / c.id / f"{tid}.wav", age)
            reply = _file(audio / "tts" / tid / "reply.wav", age)
            _file(audio / "tts" / tid / "0000-aaaaaaaaaaaa.wav", age)
            _file(audio / "tts" / tid / "0000-bbbbbbbbbbbb.wav", age)  # a re-delivered stage's clip no reply took
            db.add(
                Turn(
                    id=tid,
                    consultation_id=c.id,
                    index=index,
                    status=status,
                    input_kind="audio",
                    audio_ref=upload.relative_to(settings.data_dir).as_posix(),
                    reply_audio_ref=reply.relative_to(settings.data_dir).as_posix(),
                    transcript=f"transcript of the {name} turn",
                    answer=f"answer of the {name} turn",
                    created_at=utcnow() - timedelta(days=age),
                )
            )
            turns[name] = tid
    strays = {
        "old_piece": _file(audio / "pieces" / "task-1" / "0000.wav", OLD_DAYS),
        "new_piece": _file(audio / "pieces" / "task-2" / "0000.wav"),
        "old_adhoc": _file(audio / "tts" / "adhoc" / "x.wav", OLD_DAYS),
        "old_openai": _file(audio / "openai" / "call.webm", OLD_DAYS),
    }
    return {"consultation": c.id, "turns": turns, "strays": strays}


def _turn(settings, turn_id):
    with session_scope(settings.resolved_database_url) as db:
        t = db.get(Turn, turn_id)
        return t.audio_ref, t.reply_audio_ref, t.transcript, t.answer


def _files_of(settings, turn_id):
    return sorted(p.name for p in settings.audio_dir.rglob("*") if p.is_file() and turn_id in str(p))


def test_purge_deletes_old_audio_and_keeps_the_text(settings, stored):
    report = retention.purge(settings, older_than_days=30)
    old, new, running = (stored["turns"][k] for k in ("old", "new", "running"))
    assert report.turns == [old]
    assert _files_of(settings, old) == []
    assert not (settings.audio_dir / "tts" / old).exists()  # its emptied folder goes too
    assert _turn(settings, old) == (None, None, "transcript of the old turn", "answer of the old turn")
    # The recent turn keeps everything; the running one keeps the files its record refers to (its two old
    # clips, which nothing refers to, go as strays).
    assert len(_files_of(settings, new)) == 4 and _turn(settings, new)[0] is not None
    assert _turn(settings, running)[0] is not None
    assert (settings.data_dir / _turn(settings, running)[0]).exists()
    assert (settings.data_dir / _turn(settings, running)[1]).exists()
    s = stored["strays"]
    assert not s["old_piece"].exists() and not s["old_adhoc"].exists() and not s["old_openai"].exists()
    assert s["new_piece"].exists()
    assert report.files == 4 + 3 + 2  # the old turn's 4; 3 old strays; the running turn's 2 unreferenced old clips
    assert report.stray_files == 5
    with session_scope(settings.resolved_database_url) as db:
        events_ = list(db.query(AuditEvent).order_by(AuditEvent.id))
    purged = [e for e in events_ if e.action == "turn.audio_purged"]
    assert [e.record_id for e in purged] == [old]
    assert purged[0].detail["files"] == 4 and purged[0].detail["had_reply"] is True
    summary = [e for e in events_ if e.action == "audio.purge"]
    assert len(summary) == 1 and summary[0].detail["files"] == report.files and summary[0].actor_id is None
    again = retention.purge(settings, older_than_days=30)  # idempotent
    assert again.files == 0 and again.turns == []


def test_dry_run_deletes_nothing(settings, stored):
    before = sorted(p for p in settings.audio_dir.rglob("*") if p.is_file())
    report = retention.purge(settings, older_than_days=30, dry_run=True)
    assert report.turns == [stored["turns"]["old"]] and report.files == 9
    assert sorted(p for p in settings.audio_dir.rglob("*") if p.is_file()) == before
    assert _turn(settings, stored["turns"]["old"])[1] is not None
    with session_scope(settings.resolved_database_url) as db:
        assert db.query(AuditEvent).filter(AuditEvent.action.like("%purge%")).count() == 0


def test_off_by_default(settings, stored):
    assert settings.audio_retention_days is None
    assert retention.purge(settings).files == 0
    assert retention.purge_if_due(settings) is None
    assert stored["strays"]["old_piece"].exists()


def test_the_api_reads_a_purged_turn_without_its_audio(settings, stored):
    old = stored["turns"]["old"]
    retention.purge(settings, older_than_days=30)
    with TestClient(create_app(settings)) as c:
        token = c.post("/v1/auth/token", data={"username": "ann", "password": PASSWORD}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        r = c.get(f"/v1/turns/{old}", headers=h)
        assert r.status_code == 200 and r.json()["answer"] == "answer of the old turn"
        audio = c.get(f"/v1/turns/{old}/audio", headers=h)
        assert audio.status_code == 404 and "no reply audio" in audio.json()["detail"]


def test_the_api_purges_from_its_periodic_loop_once_per_interval(settings, stored):
    events.client(settings.redis_url).delete(retention.DUE_KEY)
    s = settings.model_copy(
        update={"audio_retention_days": 30, "consult_reap_interval_s": 0.2, "audio_retention_interval_s": 3600}
    )
    with TestClient(create_app(s)):
        wait_for(lambda: not stored["strays"]["old_piece"].exists(), 30, "the periodic purge")
        # A new old stray now waits for the next interval: the Redis key says a process purged this hour.
        late = _file(s.audio_dir / "pieces" / "task-3" / "0000.wav", OLD_DAYS)
        assert retention.purge_if_due(s) is None
    assert late.exists()
    assert _turn(settings, stored["turns"]["old"])[0] is None
    events.client(settings.redis_url).delete(retention.DUE_KEY)


def test_the_cli_command(settings, stored, tmp_path):
    env = {
        **os.environ,
        "MEDVOICE_DATABASE_URL": settings.resolved_database_url,
        "MEDVOICE_DATA_DIR": str(settings.data_dir),
        "MEDVOICE_AUDIO_RETENTION_DAYS": "30",
    }
    cmd = [sys.executable, "-m", "app.cli", "purge-audio"]
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 9 audio files" in dry.stdout and "from 1 turns" in dry.stdout
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deleted 9 audio files" in done.stdout
    assert _turn(settings, stored["turns"]["old"])[:2] == (None, None)
    off = {k: v for k, v in env.items() if k != "MEDVOICE_AUDIO_RETENTION_DAYS"}
    refused = subprocess.run(cmd, cwd=ROOT, env=off, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "MEDVOICE_AUDIO_RETENTION_DAYS" in refused.stderr
