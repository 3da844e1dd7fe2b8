"""Turns whose queued work was lost (a broker restarted without persistence) do not stay `queued` forever:
the reaper marks them `error` and ends their event stream; finished and recently active turns are left alone."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.conftest import wait_for
from workers.core import events
from workers.core.db import session_scope
from workers.core.records import Consultation, Role, Turn, TurnStatus, User, utcnow
from workers.core.settings import Settings, get_settings


def seed(url: str) -> dict[str, str]:
    """One consultation with an old queued turn, an old generating turn, an old done turn and a fresh queued one."""
    with session_scope(url) as db:
        user = User(username="ann", password_hash="x", role=Role.clinician)
        db.add(user)
        db.flush()
        c = Consultation(owner_id=user.id, title="lost work")
        db.add(c)
        db.flush()
        turns = {}
        for i, (name, status) in enumerate(
            [
                ("old_queued", TurnStatus.queued),
                ("old_generating", TurnStatus.generating),
                ("old_done", TurnStatus.done),
                ("fresh", TurnStatus.queued),
            ]
        ):
            t = Turn(consultation_id=c.id, index=i + 1, status=status, input_kind="text", question_text="q")
            db.add(t)
            db.flush()
            turns[name] = t.id
    with session_scope(url) as db:  # backdate all but the fresh one (bypassing onupdate)
        old = utcnow() - timedelta(hours=2)
        db.execute(
            update(Turn)
            .where(Turn.id != turns["fresh"])
            .values(updated_at=old)
            .execution_options(synchronize_session=False)
        )
    return turns


def statuses(url: str, turns: dict[str, str]) -> dict[str, tuple]:
    with session_scope(url) as db:
        return {name: (db.get(Turn, tid).status, db.get(Turn, tid).error) for name, tid in turns.items()}


def test_stalled_turns_are_reaped_and_told(any_db_url, tmp_path):
    from app.migrate import upgrade
    from workers.reaper import reap

    upgrade(any_db_url)
    turns = seed(any_db_url)
    s = Settings(database_url=any_db_url, data_dir=tmp_path / "data", consult_stall_after_s=3600)
    assert sorted(reap(s)) == sorted([turns["old_queued"], turns["old_generating"]])
    got = statuses(any_db_url, turns)
    assert got["old_queued"][0] == TurnStatus.error
    assert got["old_queued"][1].startswith("stalled: no progress while queued")
    assert got["old_generating"][0] == TurnStatus.error and "while generating" in got["old_generating"][1]
    assert got["old_done"] == (TurnStatus.done, None) and got["fresh"] == (TurnStatus.queued, None)
    last = events.read_all(turns["old_queued"])[-1]
    assert last["type"] == "error" and last["code"] == "turn_stalled"
    assert reap(s) == []  # idempotent: nothing left to reap


def test_the_api_reaps_in_the_background(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    turns = seed(settings.resolved_database_url)
    s = settings.model_copy(update={"consult_stall_after_s": 3600, "consult_reap_interval_s": 0.2})
    with TestClient(create_app(s)):
        wait_for(
            lambda: statuses(s.resolved_database_url, turns)["old_queued"][0] == TurnStatus.error,
            10,
            "the API's reaper",
        )
    assert statuses(s.resolved_database_url, turns)["fresh"][0] == TurnStatus.queued


def test_the_cli_reaps_once(settings, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli

    turns = seed(settings.resolved_database_url)
    monkeypatch.setenv("MEDVOICE_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("MEDVOICE_CONSULT_STALL_AFTER_S", "3600")
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(cli, ["reap-turns"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0 and out.output.startswith("2 stalled turns marked error"), out.output
    assert turns["old_queued"] in out.output and turns["fresh"] not in out.output
