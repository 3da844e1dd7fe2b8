"""A real Prometheus server (Debian's `prometheus`), started on a free port with the project's own scrape config
(deploy/prometheus/prometheus.yml, its targets pointed at this test's API and worker node), scrapes the API's
/metrics and the worker node's endpoint; after a spoken consultation turn and a typed one the knowledge base
cannot answer, its HTTP API returns the medvoice_* series with their labels (pool, stage, outcome, route)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, wait_for
from tests.consultation.shared import worker_env

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the `prometheus` binary is not installed (`make system-deps` installs Debian's `prometheus` as root)",
    ),
]


@pytest.fixture(scope="module")
def worker_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pipeline_worker(start_module_worker, settings, worker_metrics_port):
    """The `all` worker node, serving its metrics (every pool child's, summed) on its own port."""
    return start_module_worker(
        "all", timeout_s=240, **worker_env(settings), MEDVOICE_WORKER_METRICS_PORT=str(worker_metrics_port)
    )


def scrape_config(api: str, worker: str) -> dict:
    """The shipped config with this test's targets: the API, and the worker node labelled with its pool."""
    spec = yaml.safe_load(SHIPPED.read_text())
    spec["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in spec["scrape_configs"]}
    assert set(jobs) == {"medvoice-api", "medvoice-workers"}, jobs
    jobs["medvoice-api"]["static_configs"] = [{"targets": [api]}]
    jobs["medvoice-workers"].pop("dns_sd_configs")
    jobs["medvoice-workers"]["static_configs"] = [{"targets": [worker], "labels": {"pool": "all"}}]
    return spec


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, live_server, knowledge, worker_metrics_port):
    """host:port of a Prometheus scraping live_server's /metrics (from loopback) and the worker node's."""
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(live_server, f"127.0.0.1:{worker_metrics_port}")))
    port = free_port()
    log = open(root / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(root / 'prometheus.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 60, "prometheus")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(prom: str, promql: str) -> list[dict]:
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def sse_done(api, turn_id: str, headers: dict) -> list[str]:
    r = api.get(f"/v1/turns/{turn_id}/events", headers=headers)
    assert r.status_code == 200, r.text
    return [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]


@pytest.fixture(scope="module")
def consulted(api, tokens, speech, knowledge):
    """One spoken turn answered from the knowledge base, and one typed question it has nothing on."""
    r = api.post("/v1/consultations", json={"title": "ear pain"}, headers=tokens["ann"])
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    wav = speech("How should an adult with a middle ear infection be treated?")
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        files={"file": ("question.wav", wav, "audio/wav")},
        data={"language": "en"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    assert sse_done(api, r.json()["turn_id"], tokens["ann"])[-1] == "done"
    r = api.post(
        f"/v1/consultations/{cid}/turns",
        json={"text": "Which orbital resonance shapes Saturn's rings?"},
        headers=tokens["ann"],
    )
    assert r.status_code == 202, r.text
    assert sse_done(api, r.json()["turn_id"], tokens["ann"])[-1] == "done"
    return cid


def test_prometheus_scrapes_the_api_and_the_worker_node(prometheus, consulted):
    # Both targets are up, each under its job; the worker node's series carry its pool.
    wait_for(lambda: len(query(prometheus, "up == 1")) == 2, 120, "both targets scraped")
    jobs = {r["metric"]["job"]: r["metric"] for r in query(prometheus, "up")}
    assert set(jobs) == {"medvoice-api", "medvoice-workers"} and jobs["medvoice-workers"]["pool"] == "all"

    # The turns' outcomes, counted in the pool's children, after a scrape that followed them.
    wait_for(lambda: query(prometheus, 'sum(medvoice_turns_total{outcome="done"}) >= 2'), 120, "the done turns scraped")
    done = query(prometheus, 'medvoice_turns_total{outcome="done"}')
    assert all(r["metric"]["pool"] == "all" and r["metric"]["job"] == "medvoice-workers" for r in done), done

    # Every stage's duration, by stage and outcome.
    stages = query(prometheus, 'medvoice_stage_duration_seconds_count{outcome="ok"}')
    assert {"asr", "rag", "llm", "tts"} <= {r["metric"]["stage"] for r in stages}, stages
    assert all(r["metric"]["pool"] == "all" for r in stages)

    # Upload → first audio, the answer modes (one no-answer reply), per-task runtimes by queue, model loads.
    first = query(prometheus, "sum(medvoice_turn_first_audio_seconds_count)")
    assert first and float(first[0]["value"][1]) >= 1, first
    modes = {r["metric"]["mode"] for r in query(prometheus, "medvoice_answers_total")}
    assert "no_answer" in modes, modes
    tasks = {
        (r["metric"]["task"], r["metric"]["queue"]) for r in query(prometheus, "medvoice_task_runtime_seconds_count")
    }
    assert {("asr.turn", "asr"), ("rag.turn", "rag"), ("llm.turn", "llm"), ("tts.turn", "tts")} <= tasks, tasks
    engines = {r["metric"]["engine"] for r in query(prometheus, "medvoice_model_load_seconds_count")}
    assert {"asr", "llm"} <= engines, engines

    # The API's own: requests by route template and status, queue depths, the knowledge base's size.
    routes = {
        (r["metric"]["route"], r["metric"]["status"])
        for r in query(prometheus, 'medvoice_http_requests_total{job="medvoice-api"}')
    }
    assert ("/v1/consultations/{consultation_id}/turns", "202") in routes, routes
    assert ("/v1/turns/{turn_id}/events", "200") in routes, routes
    queues = {r["metric"]["queue"] for r in query(prometheus, "medvoice_queue_depth_messages")}
    assert queues == {"asr", "live", "rag", "llm", "tts"}
    docs = query(prometheus, "medvoice_kb_documents")
    assert docs and float(docs[0]["value"][1]) == 1, docs
    assert query(prometheus, "medvoice_kb_chunks > 0")

    # The README's queries answer.
    assert query(prometheus, "sum by (outcome) (rate(medvoice_turns_total[5m]))") is not None
    assert query(prometheus, "max by (queue) (medvoice_queue_depth_messages)")

    # No clinical text and no user names in any label Prometheus holds.
    labels = json.dumps(query(prometheus, '{__name__=~"medvoice_.+"}'))
    for text in ('"ann"', "middle ear", "orbital", "Saturn", "amoxicillin"):
        assert text not in labels, text


def node_samples(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def test_the_node_figures_survive_a_child_restart(pipeline_worker, consulted, worker_metrics_port):
    import os
    import signal

    import redis

    from workers.celery_app import ENGINES_READY_PREFIX

    done = node_samples(worker_metrics_port, "medvoice_turns_total")
    loads = node_samples(worker_metrics_port, "medvoice_model_load_seconds_count")
    assert done >= 2 and loads >= 1
    ready = redis.Redis.from_url(os.environ["MEDVOICE_REDIS_URL"])
    key = ENGINES_READY_PREFIX + pipeline_worker.name
    (child,) = [int(p) for p in ready.smembers(key)]
    os.kill(child, signal.SIGKILL)  # the prefork parent starts a new child, which loads its models again
    wait_for(
        lambda: node_samples(worker_metrics_port, "medvoice_model_load_seconds_count") > loads,
        240,
        "a new child to load its models",
    )
    assert node_samples(worker_metrics_port, "medvoice_turns_total") == done  # the killed child's counts stay
