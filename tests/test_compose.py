"""docker-compose.yml: validated by the Docker Compose client (no engine runs here) and by structure."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV = {**os.environ, "MEDVOICE_JWT_SECRET": "x" * 40, "MEDVOICE_FLOWER_BASIC_AUTH": "ops:secret"}


def compose_cmd() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", [None, "postgres", "chroma", "monitoring"])
def test_compose_client_validates(profile):
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("no Docker Compose client (`docker compose` plugin or Debian's docker-compose) installed")
    args = [*cmd, "-f", str(COMPOSE)] + (["--profile", profile] if profile else []) + ["config", "-q"]
    r = subprocess.run(args, env=ENV, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_compose_refuses_missing_secret():
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("no Docker Compose client installed")
    env = {k: v for k, v in ENV.items() if k != "MEDVOICE_JWT_SECRET"}
    r = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "MEDVOICE_JWT_SECRET" in r.stderr


def test_compose_shape():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    from workers.core.settings import POOLS

    for name in ("redis", "api", *(f"worker-{p}" for p in POOLS), "flower", "postgres"):
        assert name in services, name
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["postgres"]["profiles"] == ["postgres"]
    for pool in POOLS:  # /readyz waits for a consumer on every queue
        svc = services[f"worker-{pool}"]
        assert f"--pool {pool}" in " ".join(svc["command"])
        assert "medvoice-data:/data" in svc["volumes"]
    assert "medvoice-data:/data" in services["api"]["volumes"]
    assert {"medvoice-data", "redis-data", "postgres-data"} <= set(spec["volumes"])
    # The monitoring profile: Prometheus with the scrape config deploy/ ships (test_metrics_prometheus runs it).
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"] and "healthcheck" in prometheus
    mount = next(v for v in prometheus["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro"))
    assert (ROOT / mount.split(":")[0]).resolve() == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert (ROOT / "deploy" / "prometheus" / "prometheus.yml").is_file()
