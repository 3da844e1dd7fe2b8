"""The sample knowledge base `make demo` ingests: every document loads with a title and a date, it ships
inside the package, and it shows what the demo wants to show (an old edition beside a new one, Chinese)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

from knowledge.loaders import load_file

SAMPLE_DIR = Path(str(files("knowledge") / "sample_kb"))
DOCS = sorted(SAMPLE_DIR.glob("*.md"))


def test_the_sample_kb_is_there():
    assert 4 <= len(DOCS) <= 8, DOCS


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_sample_document_loads_with_title_and_date(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\ntitle: "), "front matter with title: and date:"
    doc = load_file(path)
    assert doc.title and doc.title != path.stem, "the title comes from the front matter"
    assert doc.date and doc.date[:4].isdigit(), "the date comes from the front matter, not the file's mtime"
    assert doc.date in text, doc.date
    assert len(text.splitlines()) <= 30, "short: the demo ingests them at every start"
    assert doc.sections and all(s.text.strip() for s in doc.sections)


def test_the_sample_kb_shows_decay_and_chinese():
    docs = [load_file(p) for p in DOCS]
    assert any(d.language == "zh" for d in docs), "at least one Chinese document"
    otitis = sorted((d for d in docs if "otitis media in adults" in d.title.lower()), key=lambda d: d.date)
    assert len(otitis) == 2, "an old edition beside the current one, so the time decay is visible"
    old, new = otitis
    assert int(new.date[:4]) - int(old.date[:4]) >= 10
    assert "10 days" in old.text and "5 days" in new.text


def test_the_demo_ids_are_stable_and_unique():
    from app.cli.demo_steps import sample_documents

    docs = sample_documents()
    assert [p for p, _ in docs] == DOCS
    ids = [doc_id for _, doc_id in docs]
    assert len(set(ids)) == len(ids) and all(i.startswith("sample-") for i in ids)


def test_sample_kb_ships_in_the_package():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(p.startswith("knowledge") for p in cfg["packages"]["find"]["include"])
    assert cfg["packages"]["find"].get("namespaces", True), "sample_kb has no __init__.py: a namespace package"
    assert "*.md" in cfg["package-data"]["*"]
