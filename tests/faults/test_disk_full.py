"""The data directory full (a small tmpfs mounted for the test, as root): an upload answers 507 with a reason,
nothing half-written stays behind, no turn row is left for it, and the service keeps serving reads."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

PASSWORD = "password-1234"


def wav(seconds: float) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
def full_data_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the data directory needs root")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is missing")
    mnt = tmp_path / "data"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def test_a_full_data_directory_refuses_uploads_with_507_and_keeps_serving(full_data_dir, sqlite_url):
    # The database lives off the full disk (sqlite_url is under tmp_path): only the data directory is full.
    from fastapi.testclient import TestClient

    from app import users as svc
    from app.main import create_app
    from workers.core.db import session_scope
    from workers.core.records import Role, Turn
    from workers.core.settings import Settings

    settings = Settings(database_url=sqlite_url, data_dir=full_data_dir, consult_max_audio_bytes=2_000_000)
    with session_scope(sqlite_url) as db:
        svc.create_user(db, "ann", PASSWORD, Role.clinician)
    with TestClient(create_app(settings)) as api:
        token = api.post("/v1/auth/token", data={"username": "ann", "password": PASSWORD}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        cid = api.post("/v1/consultations", json={"title": "full disk"}, headers=h).json()["id"]
        # Fill the disk but for a little: a 1.5 s upload (48 kB) no longer fits.
        filler = full_data_dir / "filler"
        st = os.statvfs(full_data_dir)
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 16 * 1024))  # room for 16 kB
        before = files_under(full_data_dir)

        r = api.post(
            f"/v1/consultations/{cid}/turns",
            files={"file": ("q.wav", wav(1.5), "audio/wav")},
            data={"language": "en"},
            headers=h,
        )
        assert r.status_code == 507, r.text
        assert r.json()["detail"]["code"] == "insufficient_storage", r.text
        assert "full" in r.json()["detail"]["message"]
        # Nothing half-written: no partial upload or temporary file, and no turn row for it.
        assert files_under(full_data_dir) == before
        with session_scope(sqlite_url) as db:
            assert db.query(Turn).filter_by(consultation_id=cid).count() == 0

        # Reads go on: the consultation, the user, readiness of the database.
        got = api.get(f"/v1/consultations/{cid}", headers=h)
        assert got.status_code == 200 and got.json()["turns"] == []
        assert api.get("/v1/consultations", headers=h).status_code == 200
        assert api.get("/healthz").status_code == 200
