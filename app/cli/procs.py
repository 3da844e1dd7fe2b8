"""Background service processes for the demo: start detached with a pidfile and a log, stop by pidfile."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def medvoice_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(run_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # outlives `make demo`
    )
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop(run_dir: Path, name: str, timeout_s: float = 15.0) -> bool:
    pidfile = run_dir / f"{name}.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text().strip() or 0)
    pidfile.unlink()
    if pid <= 0 or not pid_alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)  # the whole session: Celery's pool children too
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_all(run_dir: Path) -> list[str]:
    return [p.stem for p in sorted(run_dir.glob("*.pid")) if stop(run_dir, p.stem)]
