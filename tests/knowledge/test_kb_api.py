"""REST routes over a real rag worker process: role checks, upload → search → list → delete; the CLI."""

from __future__ import annotations

import json

import pytest

from app import users as svc
from tests.knowledge.kb_fixtures import MD, write_docx
from workers.core.db import session_scope
from workers.core.errors import EmptyInput
from workers.core.records import Role

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-battery"


@pytest.fixture
def tokens(client, settings):
    with session_scope(settings.resolved_database_url) as db:
        svc.create_user(db, "clin", PASSWORD, Role.clinician)
        svc.create_user(db, "boss", PASSWORD, Role.admin)
    out = {}
    for name in ("clin", "boss"):
        r = client.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        out[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return out


@pytest.fixture
def rag_worker(start_worker, settings):
    kb_dir = settings.data_dir / "knowledge"
    return start_worker(
        "rag",
        timeout_s=120,
        MEDVOICE_KB_DIR=str(kb_dir),
        MEDVOICE_DATA_DIR=str(settings.data_dir),
        MEDVOICE_KB_REFRESH_INTERVAL_S="0",
    )


def test_roles_are_enforced_without_a_worker(client, tokens, settings):
    files = {"file": ("a.md", MD.encode(), "text/markdown")}
    assert client.post("/v1/knowledge/documents", files=files).status_code == 401
    assert client.post("/v1/knowledge/documents", files=files, headers=tokens["clin"]).status_code == 403
    assert client.get("/v1/knowledge/documents", headers=tokens["clin"]).status_code == 403
    assert client.delete("/v1/knowledge/documents/x", headers=tokens["clin"]).status_code == 403
    assert client.post("/v1/knowledge/search", json={"query": "x"}).status_code == 401
    # validation happens before any task is sent
    assert client.post("/v1/knowledge/search", json={"query": ""}, headers=tokens["clin"]).status_code == 422
    bad = {"file": ("a.exe", b"MZ", "application/octet-stream")}
    assert client.post("/v1/knowledge/documents", files=bad, headers=tokens["boss"]).status_code == 415
    settings.kb_max_upload_bytes = 100  # the app holds this same Settings object
    big = {"file": ("big.txt", b"x" * 1000, "text/plain")}
    assert client.post("/v1/knowledge/documents", files=big, headers=tokens["boss"]).status_code == 413
    empty = {"file": ("empty.txt", b"", "text/plain")}
    assert client.post("/v1/knowledge/documents", files=empty, headers=tokens["boss"]).status_code == 422


def test_upload_search_list_delete_through_the_rag_pool(client, tokens, rag_worker, tmp_path, settings, monkeypatch):
    boss, clin = tokens["boss"], tokens["clin"]
    r = client.post(
        "/v1/knowledge/documents",
        headers=boss,
        files={"file": ("htn.md", MD.encode(), "text/markdown")},
        data={"tags": "cardio", "date": "2024-01-01"},
    )
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["status"] == "added" and up["chunks"] >= 2 and up["doc_id"] == "upload-htn"
    # same upload again: unchanged (idempotent by content hash)
    r = client.post(
        "/v1/knowledge/documents",
        headers=boss,
        files={"file": ("htn.md", MD.encode(), "text/markdown")},
        data={"tags": "cardio", "date": "2024-01-01"},
    )
    assert r.json()["status"] == "unchanged"
    docx = write_docx(tmp_path / "gout.docx", "Gout", [("Treatment", ["Colchicine treats an acute gout attack."])])
    r = client.post("/v1/knowledge/documents", headers=boss, files={"file": ("gout.docx", docx.read_bytes())})
    assert r.status_code == 201, r.text
    r = client.post("/v1/knowledge/documents", headers=boss, files={"file": ("broken.pdf", b"%PDF-1.4 nope")})
    assert r.status_code == 422 and "unreadable PDF" in r.text

    r = client.post("/v1/knowledge/search", headers=clin, json={"query": "first-line drugs for hypertension", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["nothing_relevant"] and body["hits"][0]["doc_id"] == "upload-htn"
    hit = body["hits"][0]
    assert hit["date"] == "2024-01-01" and hit["score"] == pytest.approx(hit["similarity"] * hit["decay"], abs=1e-4)
    r = client.post("/v1/knowledge/search", headers=clin, json={"query": "gout", "filters": {"tags": ["cardio"]}})
    assert all(h["doc_id"] == "upload-htn" for h in r.json()["hits"])

    listed = client.get("/v1/knowledge/documents", headers=boss).json()
    assert {d["doc_id"] for d in listed} == {"upload-htn", "upload-gout"}
    assert client.delete("/v1/knowledge/documents/upload-htn", headers=boss).status_code == 204
    assert client.delete("/v1/knowledge/documents/upload-htn", headers=boss).status_code == 404
    assert [d["doc_id"] for d in client.get("/v1/knowledge/documents", headers=boss).json()] == ["upload-gout"]

    # rag.search as the consultation flow calls it, by task name
    from workers.celery_app import celery_app

    out = celery_app.send_task("rag.search", kwargs={"query": "colchicine", "k": 2}).get(timeout=30)
    assert out["hits"][0]["doc_id"] == "upload-gout"
    assert set(out["hits"][0]) >= {
        "chunk_id",
        "doc_id",
        "title",
        "source",
        "date",
        "text",
        "similarity",
        "decay",
        "score",
    }
    # bad input is raised as a typed error, rebuilt as the same class on this side
    with pytest.raises(EmptyInput) as info:
        celery_app.send_task("rag.search", kwargs={"query": "  "}).get(timeout=30)
    assert info.value.code == "empty_input" and info.value.details == {"field": "query"}
    r = client.post("/v1/knowledge/search", headers=clin, json={"query": "  "})
    assert r.status_code == 422 and r.json()["detail"]["code"] == "empty_input", r.text

    # The embedded store is held by the worker: the CLI hands its ingest to the worker instead of opening it.
    from typer.testing import CliRunner

    from app.cli import cli
    from workers.core.settings import get_settings

    monkeypatch.setenv("MEDVOICE_KB_DIR", str(settings.data_dir / "knowledge"))
    get_settings.cache_clear()
    try:
        folder = tmp_path / "more"
        folder.mkdir()
        (folder / "asthma.txt").write_text("Asthma inhalers\nInhaled corticosteroids control persistent asthma.")
        r = CliRunner().invoke(cli, ["kb", "ingest", str(folder), "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "sending the files to it" in r.output
        assert json.loads(r.stdout.strip().splitlines()[-1])["added"] == 1
        listed = CliRunner().invoke(cli, ["kb", "list", "--json"], catch_exceptions=False)
        assert "Asthma inhalers" in {d["title"] for d in json.loads(listed.stdout)}
        found = CliRunner().invoke(cli, ["kb", "search", "inhaled corticosteroids", "--json"], catch_exceptions=False)
        assert json.loads(found.stdout)["hits"][0]["title"] == "Asthma inhalers"
        bad = CliRunner().invoke(cli, ["kb", "search", "   "], catch_exceptions=False)
        assert bad.exit_code == 2 and "error: query is empty (empty_input)" in bad.output
    finally:
        get_settings.cache_clear()
    r = client.post("/v1/knowledge/search", headers=clin, json={"query": "inhaled corticosteroids asthma"})
    assert r.json()["hits"][0]["title"] == "Asthma inhalers"


@pytest.fixture
def kb_cli(tmp_path, monkeypatch):
    """Run `medvoice kb ...` in this process (Typer's runner) against a fresh knowledge directory."""
    from typer.testing import CliRunner

    from app.cli import cli
    from workers.core.settings import get_settings

    monkeypatch.setenv("MEDVOICE_KB_DIR", str(tmp_path / "kb"))
    monkeypatch.setenv("MEDVOICE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["kb", *args], catch_exceptions=False)

    yield run
    get_settings.cache_clear()


def test_cli_ingest_list_show_search_delete(tmp_path, kb_cli):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "htn.md").write_text(MD)
    (docs / "bad.txt").write_bytes(b"\xff\xfe\xfd")
    r = kb_cli("ingest", str(docs), "--tags", "cardio", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert (s["added"], s["failed"]) == (1, 1) and "not UTF-8" in s["failures"][0]["reason"]
    doc_id = s["documents"][0]["doc_id"]
    r = kb_cli("ingest", str(docs), "--tags", "cardio")  # human output: progress bar and summary
    assert r.exit_code == 0 and "unchanged 1" in r.stdout and "not UTF-8" in r.stdout and "chunks/s" in r.stdout
    listed = json.loads(kb_cli("list", "--json").stdout)
    assert [d["doc_id"] for d in listed] == [doc_id] and listed[0]["tags"] == ["cardio"]
    assert "ACE inhibitors" in kb_cli("show", doc_id, "--full").stdout
    out = kb_cli("search", "treatment of high blood pressure", "-k", "2").stdout
    assert "similarity" in out and "decay" in out and doc_id in out
    res = json.loads(kb_cli("search", "ACE inhibitors", "--json").stdout)
    assert res["hits"][0]["doc_id"] == doc_id
    assert json.loads(kb_cli("stats", "--json").stdout)["documents"] == 1
    r = kb_cli("delete", doc_id)
    assert r.exit_code == 0 and "deleted" in r.stdout
    assert json.loads(kb_cli("list", "--json").stdout) == []
    assert kb_cli("delete", doc_id).exit_code == 1
