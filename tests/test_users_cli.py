"""`medvoice users ...` as an admin runs it: a real subprocess against a real (SQLite) database."""

import os
import subprocess
import sys

import pytest

from workers.core.db import session_scope
from workers.core.records import Role, User


def medvoice(db_url, *args, input=None):
    env = {**os.environ, "MEDVOICE_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, input=input, capture_output=True, text=True, timeout=120
    )


def test_create_list_disable_set_password_delete(sqlite_url):
    r = medvoice(sqlite_url, "users", "create", "dr-who", "--role", "admin", "--password", "tardis-tardis")
    assert r.returncode == 0, r.stderr
    # Password prompted (hidden, confirmed) when --password is omitted.
    r = medvoice(sqlite_url, "users", "create", "nurse", "--role", "clinician", input="pw-123456789\npw-123456789\n")
    assert r.returncode == 0, r.stdout + r.stderr
    listing = medvoice(sqlite_url, "users", "list").stdout
    assert "dr-who" in listing and "admin" in listing and "nurse" in listing

    with session_scope(sqlite_url) as db:
        assert db.query(User).filter_by(username="nurse").one().role == Role.clinician

    assert medvoice(sqlite_url, "users", "disable", "nurse").returncode == 0
    with session_scope(sqlite_url) as db:
        assert db.query(User).filter_by(username="nurse").one().is_active is False
    assert medvoice(sqlite_url, "users", "enable", "nurse").returncode == 0

    r = medvoice(sqlite_url, "users", "set-password", "nurse", "--password", "new-password-1")
    assert r.returncode == 0
    assert medvoice(sqlite_url, "users", "delete", "nurse").returncode == 0
    assert "nurse" not in medvoice(sqlite_url, "users", "list").stdout


@pytest.mark.parametrize(
    "args, reason",
    [
        (["users", "create", "x", "--password", "short"], "at least 8"),
        (["users", "disable", "nobody"], "no user named"),
        (["users", "set-password", "nobody", "--password", "long-enough-1"], "no user named"),
    ],
)
def test_bad_input_is_a_clear_error(sqlite_url, args, reason):
    r = medvoice(sqlite_url, *args)
    assert r.returncode == 1
    assert reason in r.stdout


def test_duplicate_user_refused(sqlite_url):
    assert medvoice(sqlite_url, "users", "create", "a", "--password", "aaaaaaaaa").returncode == 0
    r = medvoice(sqlite_url, "users", "create", "a", "--password", "bbbbbbbbb")
    assert r.returncode == 1 and "already exists" in r.stdout


def test_bad_role_rejected(sqlite_url):
    r = medvoice(sqlite_url, "users", "create", "a", "--role", "janitor", "--password", "aaaaaaaaa")
    assert r.returncode == 2
