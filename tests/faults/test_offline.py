"""Offline, proven: a whole spoken consultation (Redis, the API, a worker of every pool and the client) runs in a
network namespace that has only loopback (`unshare -n`, as root, as CI is). Any path that reached for the
network (a model hub, telemetry, a download) would find no route; the consultation completes regardless. The
offline switches (HF_HUB_OFFLINE, Chroma telemetry) are left to the product to set: the test's env drops them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANONYMIZED_TELEMETRY", "HF_HUB_DISABLE_TELEMETRY")


def test_a_spoken_consultation_runs_with_no_network(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("`unshare -n` (a network namespace with only loopback) needs root")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare(1) or ip(8) is missing")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES and not k.startswith("MEDVOICE_")}
    env["MEDVOICE_MODELS_DIR"] = os.environ["MEDVOICE_MODELS_DIR"]
    for k in ("MEDVOICE_TTS_NOISE_SCALE", "MEDVOICE_TTS_NOISE_W_SCALE"):
        env[k] = os.environ.get(k, "0")
    env["MEDVOICE_DATA_DIR"] = str(tmp_path / "data")
    # Only loopback, and no route anywhere else: proved before the consultation starts.
    script = (
        "set -e; ip link set lo up; "
        'python -c "import socket,sys; s=socket.socket(); s.settimeout(3); '
        "sys.exit(s.connect_ex(('1.1.1.1', 443)) == 0)\"; "
        f"exec {sys.executable} -m tests.faults.offline_run {tmp_path}"
    )
    r = subprocess.run(
        ["unshare", "-n", "bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OFFLINE-RESULT ")]
    assert lines, f"rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    out = json.loads(lines[-1].removeprefix("OFFLINE-RESULT "))
    assert r.returncode == 0 and out["status"] == "done", out
    assert out["ingested"] == 1 and "infection" in out["transcript"].lower()
    assert out["answer"] and out["citations"] >= 1 and out["reply_audio_bytes"] > 1000, out
    assert out["events"][-1] == "done" and "transcribed" in out["events"] and "retrieved" in out["events"], out
