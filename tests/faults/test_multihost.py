"""Beyond one machine: Redis, PostgreSQL and the Chroma server on a "services" host, the API on another, the worker
pools on two more and the client on a fifth, each host a network namespace on one private /24 (tests/faults/
netns.py) with no route anywhere else. Every service listens on its non-loopback address only, so a process that
reached for 127.0.0.1 would find nothing there. The data directory is one shared path, as an NFS mount would be.
A spoken consultation goes through once, each stage on the worker host that serves its pool, and Redis,
PostgreSQL and the sockets on the worker hosts show the workers came over the /24."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults import netns
from tests.faults.procs import Postgres, pg_tool

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HOSTS = {"svc": 1, "api": 2, "desk": 3, "w1": 11, "w2": 12}  # the first holds the bridge
POOLS_ON = {"w1": ("asr", "live", "tts"), "w2": ("llm", "rag")}  # rag last: it needs the Chroma server up
REDIS_PORT, PG_PORT, CHROMA_PORT, API_PORT = 6379, 5432, 8001, 8000  # free by construction: the namespaces are new
REDIS_PASSWORD = "multihost-redis-1234"
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANONYMIZED_TELEMETRY", "HF_HUB_DISABLE_TELEMETRY")


class NetPostgres(Postgres):
    """The test's own cluster, started inside the services namespace and listening on its address only."""

    def __init__(self, hosts: netns.Hosts, role: str) -> None:
        super().__init__()
        self.hosts, self.role, self.port = hosts, role, PG_PORT
        self.url = f"postgresql+psycopg://medvoice@{hosts.addr[role]}:{PG_PORT}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        r = self.hosts.run(self.role, ["runuser", "-u", "postgres", "--", *cmd], cwd="/")
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def init(self) -> None:
        super().init()
        with open(self.data / "pg_hba.conf", "a") as f:  # initdb trusts loopback only; the hosts come over the /24
            f.write(f"host all all {netns.SUBNET}.0/24 trust\n")

    def pg_ctl(self, action: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.hosts.addr[self.role]}"
        log = str(self.dir / "pg.log")
        self._as_postgres(pg_tool("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", log, "-m", "fast", "-w", action)


MEDVOICE = [sys.executable, "-m", "app.cli"]


class Deployment:
    """The processes of one deployment across the hosts, with one env and a shared data directory."""

    def __init__(self, hosts: netns.Hosts, root: Path) -> None:
        self.hosts, self.shared, self.logs = hosts, root / "shared", root / "logs"
        self.logs.mkdir(parents=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES and not k.startswith("MEDVOICE_")}
        self.env |= {
            "MEDVOICE_MODELS_DIR": os.environ["MEDVOICE_MODELS_DIR"],
            "MEDVOICE_TTS_NOISE_SCALE": os.environ.get("MEDVOICE_TTS_NOISE_SCALE", "0"),
            "MEDVOICE_TTS_NOISE_W_SCALE": os.environ.get("MEDVOICE_TTS_NOISE_W_SCALE", "0"),
            # One path every host mounts (as NFS would be): uploads, replies and the knowledge directory.
            "MEDVOICE_DATA_DIR": str(self.shared / "data"),
            "MEDVOICE_KB_DIR": str(self.shared / "data" / "knowledge"),
            "MEDVOICE_KB_REFRESH_INTERVAL_S": "0",
            "MEDVOICE_LLM_N_CTX": "2048",
            "MEDVOICE_CONSULT_MAX_TOKENS": "64",
            "MEDVOICE_CONSULT_SSE_HEARTBEAT_S": "1",
        }

    def spawn(self, role: str, name: str, argv: list[str]) -> subprocess.Popen:
        self.procs[name] = self.hosts.spawn(role, argv, self.env, self.logs / f"{name}.log", ROOT)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self, but: subprocess.Popen | None = None) -> None:
        for name, p in self.procs.items():
            if p is not but and p.poll() is not None:
                raise AssertionError(f"{name} exited ({p.returncode}): {self.log(name)[-3000:]}")

    def wait_until(self, role: str, probe: str, what: str, timeout_s: float = 90) -> None:
        """Polls a Python one-liner run on that host (the test's own namespace has no way onto the /24)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.hosts.run(role, [sys.executable, "-I", "-c", probe]).returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def hosts():
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    h = netns.Hosts(HOSTS)
    try:
        h.create()
        yield h
    finally:
        h.close()


@pytest.fixture
def pg(hosts):
    if shutil.which("runuser") is None or pg_tool("initdb") is None or pg_tool("pg_ctl") is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) or runuser")
    cluster = NetPostgres(hosts, "svc")
    try:
        try:
            cluster.init()
        except LookupError as exc:
            pytest.skip(f"no `postgres` user to run a cluster as: {exc}")
        cluster.pg_ctl("start")
        yield cluster
        hosts.stop()  # its clients first, so none is left holding a connection it cuts
        cluster.pg_ctl("stop")
    finally:
        cluster.remove()  # hosts.close() ends a postmaster a failed test left running


@pytest.fixture
def deployment(hosts, pg, tmp_path):
    """Every process on its host: Redis and the Chroma server on svc, the API on api, the pools on w1 and w2."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # the venv's `chroma`
    if shutil.which("chroma", path=path) is None:
        pytest.skip("the `chroma` command is not installed")
    svc = hosts.addr["svc"]
    d = Deployment(hosts, tmp_path)
    d.env |= {
        "PATH": path,
        "MEDVOICE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@{svc}:{REDIS_PORT}/0",
        "MEDVOICE_DATABASE_URL": pg.url,
        "MEDVOICE_KB_CHROMA_URL": f"http://{svc}:{CHROMA_PORT}",
    }
    # Beyond loopback Redis wants a password (protected mode), as a deployment across hosts should have anyway.
    redis = ["redis-server", "--bind", svc, "--port", str(REDIS_PORT), "--requirepass", REDIS_PASSWORD]
    d.spawn("svc", "redis", [*redis, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)])
    d.wait_until("svc", f"import socket; socket.create_connection(({svc!r}, {REDIS_PORT}), 1)", "Redis")
    d.spawn("svc", "chroma", [*MEDVOICE, "kb", "server", "--host", svc, "--port", str(CHROMA_PORT)])
    migrated = hosts.run("desk", [*MEDVOICE, "migrate"], cwd=ROOT, env=d.env)  # as an admin would, from a desk
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    d.spawn("api", "api", [*MEDVOICE, "serve", "--host", hosts.addr["api"], "--port", str(API_PORT)])
    for role, pools in POOLS_ON.items():
        for pool in pools:
            if pool == "rag":  # its engine opens the knowledge base on the Chroma server when it loads
                url = f"http://{svc}:{CHROMA_PORT}/api/v2/heartbeat"
                d.wait_until(role, f"import urllib.request as u; u.urlopen({url!r}, timeout=2)", "the Chroma server")
            argv = [*MEDVOICE, "worker", "--pool", pool, "--name", f"{pool}@{role}", "--concurrency", "1"]
            d.spawn(role, f"worker-{pool}", argv)
    return d


def tcp_sockets(hosts: netns.Hosts, role: str) -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket on that host, as `ss` lists them."""
    r = hosts.run(role, ["ss", "-tanH"])
    assert r.returncode == 0, r.stderr
    return [(f[0], f[3], f[4]) for f in (ln.split() for ln in r.stdout.splitlines()) if len(f) >= 5]


def test_workers_on_other_hosts_reach_the_services_over_the_network(hosts, deployment):
    d, svc = deployment, hosts.addr["svc"]
    base = f"http://{hosts.addr['api']}:{API_PORT}"
    client = d.spawn("desk", "client", [sys.executable, "-m", "tests.faults.multihost_run", str(d.shared), base])
    deadline = time.monotonic() + 360
    while client.poll() is None:
        d.check_alive(but=client)
        assert time.monotonic() < deadline, "the client did not finish in time"
        time.sleep(0.5)
    printed = d.log("client")
    lines = [ln for ln in printed.splitlines() if ln.startswith("MULTIHOST-RESULT ")]
    assert client.returncode == 0 and lines, printed[-4000:]
    out = json.loads(lines[-1].removeprefix("MULTIHOST-RESULT "))

    # The consultation went through, once, ...
    assert out["status"] == "done" and out["error"] is None, out
    assert out["ingested"] == 1 and "infection" in out["transcript"].lower(), out
    assert out["answer"] and out["citations"] >= 1 and out["reply_audio_bytes"] > 1000, out
    assert out["events"][-1] == "done" and out["events"].count("done") == 1, out["events"]
    assert out["turns"] == [["done", None]], out["turns"]
    # ... each stage on the worker host that serves its pool, once.
    for pool in ("asr", "rag", "llm", "tts"):
        log = d.log(f"worker-{pool}").splitlines()
        ran = [ln for ln in log if f"Task {pool}.turn[" in ln and " succeeded " in ln]
        assert len(ran) == 1, (pool, ran)

    # Over the /24, never loopback: Redis and PostgreSQL saw the worker hosts' addresses ...
    came = {hosts.addr["w1"], hosts.addr["w2"], hosts.addr["api"]}
    assert came <= set(out["redis_peers"]) and came <= set(out["postgres_peers"]), out
    assert not {"127.0.0.1", "::1"} & set(out["redis_peers"] + out["postgres_peers"]), out
    # ... and the worker hosts' own sockets go to the services host, from their own address only.
    for role, ports in {"w1": {REDIS_PORT, PG_PORT}, "w2": {REDIS_PORT, PG_PORT, CHROMA_PORT}}.items():
        sockets = [s for s in tcp_sockets(hosts, role) if s[0] != "LISTEN"]
        assert {f"{svc}:{port}" for port in ports} <= {peer for _, _, peer in sockets}, (role, sockets)
        assert {local.rsplit(":", 1)[0] for _, local, _ in sockets} == {hosts.addr[role]}, (role, sockets)
