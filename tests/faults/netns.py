"""Network namespaces standing in for separate machines (`ip netns`, as root): one private /24 on a bridge that
lives inside the first namespace, a veth pair from it to each other namespace, and no route anywhere else. The
host's own namespace is never touched: no interface, address or route is added there, so nothing sent from
these namespaces can leave them. close() ends what still runs inside and deletes every namespace made here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

SUBNET = "10.213.7"


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces (`ip netns add`) need root"
    if shutil.which("ip") is None or shutil.which("ss") is None:
        return "ip(8) or ss(8) is missing (iproute2)"
    name = f"mvprobe{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    try:
        entered = subprocess.run(["ip", "netns", "exec", name, "true"], capture_output=True, text=True)
        if entered.returncode != 0:
            return f"`ip netns exec` is not permitted here: {entered.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Hosts:
    """Namespaces by role, each with one address on SUBNET; the first role's namespace holds the bridge."""

    def __init__(self, octets: dict[str, int]) -> None:
        tag = uuid.uuid4().hex[:8]  # unique per run: two runs on one machine never share a namespace
        self.addr = {role: f"{SUBNET}.{n}" for role, n in octets.items()}
        self.ns = {role: f"mv{tag}-{role}" for role in octets}
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []

    def create(self) -> None:
        switch, *others = self.ns
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        sw = self.ns[switch]
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "addr", "add", f"{self.addr[switch]}/24", "dev", "br0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for role in others:
            ns = self.ns[role]
            # Both ends are made inside namespaces of ours: the host namespace never holds either.
            _ip("-n", sw, "link", "add", f"v-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", f"v-{role}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[role]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        for ns in self.ns.values():
            routes = _ip("-n", ns, "route", "show").split("\n")
            assert all(not r or r.startswith(f"{SUBNET}.0/24 ") for r in routes), routes  # no way out

    def argv(self, role: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def spawn(self, role: str, argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
        """A process on that host, in its own process group (so it and its children stop together)."""
        with open(log, "wb") as out:
            p = subprocess.Popen(
                self.argv(role, argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(p)
        return p

    def run(self, role: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(role, argv), capture_output=True, text=True, **kw)

    def stop(self) -> None:
        """Ends the processes spawned here, last first (clients before the services they use)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    _kill_group(p.pid)
                    p.wait(5)

    def close(self) -> None:
        self.stop()
        for ns in reversed(self._made):
            # What is left inside was started by this test (a daemonized server, say): ended by its pid.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
