"""deploy/: the Kubernetes manifests against the real Kubernetes JSON schemas (offline, no cluster, no kubectl),
the two-host compose files through the Docker Compose client (no engine), and what both name: settings,
commands, probes, ports and secrets."""

from __future__ import annotations

import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from workers.core.settings import POOLS, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
GUIDE = DEPLOY / "README.md"

# The oldest Kubernetes the manifests are meant for and the newest the schemas package ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")
# The Secret template is applied by hand after filling in; it must never be part of `kubectl apply -k`.
SECRET_TEMPLATE = "secret.example.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
MEDVOICE_IMAGE = "medvoice"
PLACEHOLDER = "REPLACE_ME"
# Resident memory measured per process (deploy/README.md): a pod's memory request must hold it.
MEASURED_MB = {"api": 203, "asr": 357, "live": 625, "rag": 805, "llm": 899, "tts": 220}


def compose_cmd() -> list[str] | None:
    """The Compose client, as tests/test_compose.py finds it."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in MANIFESTS for d in load_docs(p)]


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def workloads() -> list[tuple[str, dict, dict]]:
    """(file, workload, its pod spec) for every Deployment, StatefulSet and Job."""
    return [(f, d, pod_spec(d)) for f, d in all_docs() if pod_spec(d) is not None]


def medvoice_containers() -> list[tuple[dict, dict]]:
    return [
        (d, c) for _, d, spec in workloads() for c in spec["containers"] if c["image"].split(":")[0] == MEDVOICE_IMAGE
    ]


def setting_names() -> set[str]:
    return {f"MEDVOICE_{name.upper()}" for name in Settings.model_fields}


# ---- the real `medvoice` command line ----------------------------------------------------------------------
def parse_cli(args: list[str]):  # returns a click Context
    """Parse ARGS with the real `medvoice` CLI (typer/click) without running anything: an unknown command or
    option, or a bad value, raises as it would at start-up."""
    import typer

    from app.cli import cli

    cmd, ctx, path = typer.main.get_command(cli), None, ["medvoice"]
    while hasattr(cmd, "get_command"):  # a group: walk down to the subcommand
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=ctx)
        if not args:
            raise ValueError(f"`{' '.join(path)}` needs a subcommand")
        name, args = args[0], args[1:]
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise ValueError(f"`{' '.join(path)}` has no command {name!r}")
        cmd, path = sub, [*path, name]
    return cmd.make_context(path[-1], list(args), parent=ctx)


def medvoice_invocations(command: list[str]) -> list[list[str]]:
    """The `medvoice ...` argument lists a container command runs: direct, or in `sh -c "a && exec b"`."""
    if command[:2] == ["sh", "-c"]:
        parts = [shlex.split(p) for p in command[2].split("&&")]
        parts = [p[1:] if p and p[0] == "exec" else p for p in parts]
    else:
        parts = [command]
    for p in parts:
        assert p and p[0] == "medvoice", f"not a medvoice command: {command}"
    return [p[1:] for p in parts]


def test_cli_parser_refuses_what_the_cli_would():
    assert parse_cli(["worker", "--pool", "asr", "--metrics-port", "9101"]).params["metrics_port"] == 9101
    for bad in (["worker", "--pool", "asrx"], ["worker", "--pool", "asr", "--metric-port", "1"], ["wroker"], ["kb"]):
        with pytest.raises(Exception):  # noqa: B017 - click's own exception classes (vendored by typer)
            parse_cli(bad)


# ---- Kubernetes: schemas -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kv():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: it comes with the dev extra (pip install -e '.[dev]')")
    return kubernetes_validate


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_kubernetes_schema(kv, path, version):
    docs = load_docs(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        name = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            # strict: a field the schema does not know (a typo) fails too, not only a wrong type.
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name} against Kubernetes {version}: {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: {exc.message}")


def test_schema_check_catches_a_misspelt_field_and_a_wrong_type(kv):
    (api,) = [d for _, d in all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "api"]
    typo = {**api, "spec": {**api["spec"], "replica": api["spec"]["replicas"]}}
    del typo["spec"]["replicas"]
    with pytest.raises(kv.ValidationError, match="replica"):
        kv.validate(typo, K8S_VERSIONS[0], strict=True)
    container = {**api["spec"]["template"]["spec"]["containers"][0], "ports": [{"containerPort": "8000"}]}
    wrong = yaml.safe_load(yaml.safe_dump(api))
    wrong["spec"]["template"]["spec"]["containers"] = [container]
    with pytest.raises(kv.ValidationError, match="integer"):
        kv.validate(wrong, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization" and kust["namespace"] == "medvoice"
    listed = kust["resources"]
    assert len(listed) == len(set(listed))
    assert SECRET_TEMPLATE not in listed, "the Secret template's placeholders would be deployed"
    assert set(listed) == {p.name for p in MANIFESTS} - {SECRET_TEMPLATE}
    assert {i["name"] for i in kust.get("images", [])} == {MEDVOICE_IMAGE}


def test_kustomization_renders(kv):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl: the kustomization is checked by structure above only")
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert len(rendered) == sum(1 for f, _ in all_docs() if f != SECRET_TEMPLATE)
    for doc in rendered:
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "medvoice"
        kv.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_every_object_is_in_the_namespace():
    for f, doc in all_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "medvoice", f"{f}: {doc['kind']}/{doc['metadata']['name']}"


# ---- Kubernetes: what the schemas cannot see -----------------------------------------------------------------
def test_selectors_match_their_pods_and_services_their_ports():
    pods = []
    for f, d, spec in workloads():
        labels = d["spec"]["template"]["metadata"]["labels"]
        if d["kind"] != "Job":
            selector = d["spec"]["selector"]["matchLabels"]
            assert selector.items() <= labels.items(), f"{f}: {d['metadata']['name']} selects no pod of its own"
        ports = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
        pods.append((labels, ports))
    for f, svc in all_docs():
        if svc["kind"] != "Service":
            continue
        matched = [ports for labels, ports in pods if svc["spec"]["selector"].items() <= labels.items()]
        assert matched, f"{f}: Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            assert all(port["targetPort"] in ports for ports in matched), f"{f}: {port}"


def test_references_resolve():
    """Every ConfigMap, Secret (and key), PVC and volume a pod names is defined in deploy/k8s."""
    docs = all_docs()
    configmaps = {d["metadata"]["name"] for _, d in docs if d["kind"] == "ConfigMap"}
    secret_keys = {d["metadata"]["name"]: set(d["stringData"]) for _, d in docs if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
    for f, d, spec in workloads():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"]: t for t in d["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{f}: {v}"
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps, f"{f}: {src}"
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secret_keys, f"{f}: {src}"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys.get(ref["name"], ()), f"{f}: {env['name']}"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{f}: {c['name']} mounts {m['name']}, which the pod lacks"


def test_every_pool_has_a_worker_deployment_running_the_real_worker_command():
    from celery import Celery
    from celery.app.utils import find_app

    seen = set()
    for d, c in medvoice_containers():
        if d["metadata"]["labels"].get("app.kubernetes.io/component") != "worker":
            continue
        pool = d["metadata"]["labels"]["medvoice/pool"]
        (args,) = medvoice_invocations(c["command"])
        ctx = parse_cli(args)
        assert args[0] == "worker" and ctx.params["pool"].value == pool, c["command"]
        assert ctx.params["metrics_port"] in {p["containerPort"] for p in c["ports"] if p["name"] == "metrics"}
        node = ctx.params["name"]
        assert node == f"{pool}@$(POD_NAME)", node
        assert any(e["name"] == "POD_NAME" and "fieldRef" in e.get("valueFrom", {}) for e in c["env"])
        for probe in ("startupProbe", "livenessProbe"):
            script = c[probe]["exec"]["command"]
            assert script[:2] == ["sh", "-c"], script
            argv = shlex.split(script[2])
            assert argv[:3] == ["celery", "-A", "workers.celery_app"] and "ping" in argv, argv
            assert isinstance(find_app(argv[2]), Celery)
            # the probe pings this pod's own node, by the name the worker was given
            assert argv[argv.index("-d") + 1] == node.replace("$(POD_NAME)", "$POD_NAME"), argv
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env[f"MEDVOICE_{pool.upper()}_CONCURRENCY"] == "1"
        assert mounts["/models"].get("readOnly") is True
        assert env["MEDVOICE_METRICS_DIR"] in mounts and not env["MEDVOICE_METRICS_DIR"].startswith("/data")
        seen.add(pool)
    assert seen == set(POOLS)


def test_every_medvoice_container_runs_a_real_command():
    for d, c in medvoice_containers():
        for args in medvoice_invocations(c["command"]):
            parse_cli(args)
        assert c.get("imagePullPolicy") == "IfNotPresent", d["metadata"]["name"]
    (job,) = [d for _, d in all_docs() if d["kind"] == "Job"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert [a[0] for a in medvoice_invocations(c["command"])] == ["migrate", "models"]
    # nothing else runs the migrations
    for d, c in medvoice_containers():
        if d["kind"] != "Job":
            assert "migrate" not in [a[0] for a in medvoice_invocations(c["command"])]


def test_api_probes_use_the_real_health_routes():
    from app.routes.health import router

    routes = {r.path for r in router.routes}
    (api,) = [c for d, c in medvoice_containers() if d["metadata"]["name"] == "api"]
    assert parse_cli(medvoice_invocations(api["command"])[0]).params["port"] == 8000
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert api["startupProbe"]["httpGet"]["path"] in routes


def parse_quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
    return float(number) * units[unit]


def test_resources_requested_and_memory_sized_from_the_measurements():
    for f, d, spec in workloads():
        for c in spec["containers"]:
            res = c.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            assert {"cpu", "memory"} <= req.keys() and "memory" in lim, f"{f}: {c['name']}"
            assert parse_quantity(lim["memory"]) >= parse_quantity(req["memory"]), f"{f}: {c['name']}"
            key = d["metadata"]["labels"].get("medvoice/pool") or d["metadata"]["name"]
            if key in MEASURED_MB:
                assert parse_quantity(req["memory"]) >= MEASURED_MB[key] * 1e6, f"{key}: {req['memory']}"
    assert {
        d["metadata"]["labels"].get("medvoice/pool") or d["metadata"]["name"] for _, d, _ in workloads()
    } >= MEASURED_MB.keys()


def test_only_the_api_is_routed_from_outside_and_not_its_metrics():
    (ing,) = [d for _, d in all_docs() if d["kind"] == "Ingress"]
    paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["backend"]["service"]["name"] for p in paths} == {"api"}
    assert sorted(p["path"] for p in paths) == ["/console", "/v1"]
    policies = [d for _, d in all_docs() if d["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] for p in policies)


# ---- MEDVOICE_* names ----------------------------------------------------------------------------------------
def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def test_every_medvoice_setting_named_under_deploy_exists():
    known = setting_names()
    unknown = {}
    for path in deploy_files():
        names = set(re.findall(r"\bMEDVOICE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        if names - known:
            unknown[str(path.relative_to(ROOT))] = sorted(names - known)
    assert not unknown, f"not settings of workers/core/settings.py: {unknown}"


def test_settings_check_would_catch_a_misspelt_name():
    assert "MEDVOICE_KB_CHROMA_URL" in setting_names() and "MEDVOICE_CHROMA_URL" not in setting_names()


# ---- secrets ------------------------------------------------------------------------------------------------
SECRETISH_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|BASIC_AUTH|API_KEY", re.I)


def is_placeholder(value: str) -> bool:
    v = value.strip()
    return (
        PLACEHOLDER in v
        or re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?][^}]*)?\}", v) is not None  # a required compose variable
        or re.fullmatch(r"[A-Z][A-Z0-9_]*", v) is not None  # a name in the docs: PASSWORD, HOST_A_ADDR
    )


def entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def secret_like(text: str) -> list[str]:
    """Values in TEXT that look like real credentials: key material, a password inside a URL, a long random
    token (mixed case and digits, or hex)."""
    found = []
    if "-----BEGIN" in text:
        found.append("a PEM block")
    for pw in re.findall(r"://[^/\s:@]*:([^@\s/]+)@", text):
        if not is_placeholder(pw):
            found.append(f"a password in a URL: {pw}")
    for token in re.findall(r"[A-Za-z0-9+/=_-]{20,}", text):
        if PLACEHOLDER in token:
            continue
        classes = sum(bool(re.search(p, token)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
        if (classes == 3 and entropy(token) >= 4.0) or re.fullmatch(r"[0-9a-fA-F]{32,}", token):
            found.append(f"a random-looking token: {token}")
    return found


def test_secret_detector_finds_real_secrets_and_passes_placeholders():
    for real in (
        f"MEDVOICE_JWT_SECRET: {secrets.token_urlsafe(48)}",
        f"REDIS_PASSWORD={secrets.token_hex(32)}",
        "MEDVOICE_REDIS_URL: redis://:hunter2@redis:6379/0",
        "-----BEGIN PRIVATE KEY-----",
    ):
        assert secret_like(real), real
    for fine in (
        "MEDVOICE_REDIS_URL: redis://:REPLACE_ME_REDIS_PASSWORD@redis:6379/0",
        'MEDVOICE_REDIS_URL: "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"',
        "redis://:PASSWORD@HOST_A_ADDR:6379/0",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component",
    ):
        assert not secret_like(fine), fine


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_real_looking_secret(path):
    assert not secret_like(path.read_text()), f"{path.relative_to(ROOT)}: {secret_like(path.read_text())}"


def test_secrets_are_placeholders_or_references():
    for f, doc in all_docs():
        if doc["kind"] == "Secret":
            assert f == SECRET_TEMPLATE and "data" not in doc
            for key, value in doc["stringData"].items():
                assert PLACEHOLDER in value, f"{f}: {key} is not a placeholder"
        elif doc["kind"] == "ConfigMap":
            assert not [k for k in doc["data"] if SECRETISH_KEY.search(k)], f"{f}: a secret in a ConfigMap"
    for c in [c for _, _, spec in workloads() for c in spec["containers"]]:
        for env in c.get("env", []):
            if SECRETISH_KEY.search(env["name"]):
                assert "value" not in env, f"{c['name']}: {env['name']} is written into the manifest"
    # production refuses a JWT secret under 32 characters: a placeholder left in stops the start, never signs
    (template,) = [d for d in load_docs(K8S / SECRET_TEMPLATE) if d["metadata"]["name"] == "medvoice-secrets"]
    assert len(template["stringData"]["MEDVOICE_JWT_SECRET"]) < 32
    for env_file in COMPOSE_DIR.glob("*.env.example"):
        for key, value in read_env(env_file).items():
            if SECRETISH_KEY.search(key):
                assert PLACEHOLDER in value, f"{env_file.name}: {key}"


# ---- compose: every combination the guide documents ------------------------------------------------------------
def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and line[0] != "#")
    return {k.strip(): v.strip() for k, v in pairs}


def documented_commands() -> list[tuple[tuple[str, ...], list[str]]]:
    """(compose files, env files) of every `docker compose -f ...` command in deploy/README.md."""
    out = []
    for cmd in re.findall(r"docker compose((?:\s+(?:-f|--env-file)\s+\S+)+)", GUIDE.read_text()):
        pairs = list(zip(cmd.split()[::2], cmd.split()[1::2]))  # (flag, value)
        out.append((tuple(v for f, v in pairs if f == "-f"), [v for f, v in pairs if f == "--env-file"]))
    return out


COMBOS = sorted({(files, envs[0]) for files, envs in documented_commands() if len(envs) == 1})
HOST_A = (("docker-compose.yml", "deploy/compose/host-a.yml"), "deploy/compose/host-a.env")
HOST_B = (("deploy/compose/host-b.yml",), "deploy/compose/host-b.env")


def test_the_guide_documents_both_hosts_each_with_its_env_file():
    commands = documented_commands()
    assert commands
    for files, envs in commands:
        # each command names exactly one env file, one whose example ships beside it
        assert len(envs) == 1 and (ROOT / f"{envs[0]}.example").is_file(), (files, envs)
    assert HOST_A in COMBOS and HOST_B in COMBOS, COMBOS


def run_config(files: tuple[str, ...], env_file: Path) -> subprocess.CompletedProcess:
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("no Docker Compose client (`docker compose` plugin or Debian's docker-compose) installed")
    args = [*cmd, *[a for f in files for a in ("-f", f)], "--env-file", str(env_file), "config"]
    # Only the env file speaks: none of the caller's MEDVOICE_* (the Makefile exports some) may fill a variable.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_CONFIG") if k in os.environ}
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)


def merged(files: tuple[str, ...], env_file: str) -> tuple[dict, dict[str, str]]:
    example = ROOT / f"{env_file}.example"
    assert example.is_file(), f"{env_file} is documented, {example.name} is missing"
    r = run_config(files, example)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout), read_env(example)


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, in either client's output."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            assert len(parts) == 3, f"published on every interface: {p}"
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def mounts(service: dict) -> dict[str, str]:
    """container path → host path (or volume) of each mount, in either client's output."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v.get("source", "")
        else:
            source, target = str(v).split(":")[:2]
            out[target] = source
    return out


def is_medvoice(service: dict) -> bool:
    return service.get("image", "").split(":")[0] == MEDVOICE_IMAGE


def check_commands(services: dict) -> None:
    for name, svc in services.items():
        if not is_medvoice(svc):
            continue
        for args in medvoice_invocations(svc["command"]):
            ctx = parse_cli([a.replace("$$", "$") for a in args])
            if args[0] == "worker":
                pool = ctx.params["pool"].value
                assert name == f"worker-{pool}", name
                probe = shlex.split(svc["healthcheck"]["test"][1])
                assert probe[:3] == ["celery", "-A", "workers.celery_app"] and "ping" in probe
                assert probe[probe.index("-d") + 1].replace("$$", "$") == ctx.params["name"], (probe, ctx.params)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "+".join(Path(f).stem for f in c[0]))
def test_documented_compose_combination_validates(combo):
    spec, env = merged(*combo)
    assert spec["services"]
    check_commands(spec["services"])


def test_host_a_runs_the_state_and_the_api_but_no_pool():
    spec, env = merged(*HOST_A)
    services = spec["services"]
    profiles = set(env["COMPOSE_PROFILES"].split(","))
    active = {n for n, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])}
    assert active == {"redis", "postgres", "setup", "api", "chroma", "flower", "prometheus"}
    assert all("workers" in s["profiles"] for n, s in services.items() if n.startswith("worker-"))
    for name in active:
        for host, _, _ in published(services[name]):
            assert host in ("127.0.0.1", env["HOST_A_ADDR"]), f"{name} published on {host!r}"
    assert {p[1] for p in published(services["redis"])} == {6379}
    assert "--requirepass" in " ".join(services["redis"]["command"])
    for name in active:
        if is_medvoice(services[name]):
            s = services[name]
            assert mounts(s)["/data"] == env["SHARED_DATA_DIR"], name
            e = s["environment"]
            assert e["MEDVOICE_REDIS_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0", name
            assert e["MEDVOICE_DATABASE_URL"].startswith("postgresql+psycopg://"), name
            assert e["MEDVOICE_KB_CHROMA_URL"] == "http://chroma:8001", name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    assert services["setup"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # only `setup` migrates
    migrating = [n for n in active if is_medvoice(services[n]) and "migrate" in " ".join(services[n]["command"])]
    assert migrating == ["setup"]


def test_host_b_runs_every_pool_against_host_a():
    spec, env = merged(*HOST_B)
    services = spec["services"]
    assert set(services) == {f"worker-{p}" for p in POOLS}
    ports = {}
    for name, s in services.items():
        (host, port, target), *more = published(s)
        assert not more and host == env["HOST_B_ADDR"], name
        assert str(target) in s["command"][-1].split(), "the published port is the worker's --metrics-port"
        ports[name.removeprefix("worker-")] = port
        e = s["environment"]
        for key in ("MEDVOICE_REDIS_URL", "MEDVOICE_DATABASE_URL", "MEDVOICE_KB_CHROMA_URL"):
            assert f"@{env['HOST_A_ADDR']}:" in e[key] or f"//{env['HOST_A_ADDR']}:" in e[key], key
        assert e["MEDVOICE_DATA_DIR"] == "/data" and mounts(s)["/data"] == env["SHARED_DATA_DIR"]
        assert not e["MEDVOICE_METRICS_DIR"].startswith("/data"), "memory-mapped metrics files on NFS"
        assert e[f"MEDVOICE_{name.removeprefix('worker-').upper()}_CONCURRENCY"] == "1"
    assert len(set(ports.values())) == len(ports)
    # host A's Prometheus scrapes exactly these ports, each with its pool's label
    targets = yaml.safe_load((DEPLOY / "prometheus" / "targets" / "host-b.yml").read_text())
    scraped = {t["labels"]["pool"]: int(t["targets"][0].rsplit(":", 1)[1]) for t in targets}
    assert scraped == ports


REQUIRED = [("host-a", "REDIS_PASSWORD"), ("host-a", "POSTGRES_PASSWORD"), ("host-b", "REDIS_PASSWORD")]
REQUIRED += [("host-b", "POSTGRES_PASSWORD"), ("host-b", "MEDVOICE_JWT_SECRET")]


@pytest.mark.parametrize(("host", "var"), REQUIRED)
def test_compose_refuses_a_missing_secret(host, var, tmp_path):
    files, env_file = {"host-a": HOST_A, "host-b": HOST_B}[host]
    env = {k: v for k, v in read_env(ROOT / f"{env_file}.example").items() if k != var}
    stripped = tmp_path / "no-secret.env"
    stripped.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    r = run_config(files, stripped)
    assert r.returncode != 0 and var in r.stderr, r.stderr


# ---- Prometheus ------------------------------------------------------------------------------------------------
def promtool(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("no promtool (Debian: prometheus)")
    return subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def test_two_hosts_prometheus_config_and_its_targets(tmp_path):
    # Point the file discovery at the repository's targets so that promtool checks them too.
    text = (DEPLOY / "prometheus" / "two-hosts.yml").read_text()
    assert "/etc/prometheus/targets/" in text
    config = tmp_path / "two-hosts.yml"
    config.write_text(text.replace("/etc/prometheus/targets/", f"{DEPLOY / 'prometheus' / 'targets'}/"))
    r = promtool(config)
    assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_kubernetes_prometheus_config():
    r = promtool(DEPLOY / "prometheus" / "kubernetes.yml")
    if r.returncode != 0 and "kubernetes_sd_configs not found" in r.stdout + r.stderr:
        pytest.skip("this promtool is built without Kubernetes service discovery (Debian's is)")
    assert r.returncode == 0, r.stdout + r.stderr
