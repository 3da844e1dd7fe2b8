"""The sample knowledge base as numbered passages, chunked as the product chunks it (no embedder needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.chunking import chunk_document
from knowledge.loaders import load_file

SAMPLE_KB = Path(__file__).resolve().parents[2] / "knowledge" / "sample_kb"


@pytest.fixture(scope="session")
def sample_passages() -> list[dict]:
    out: list[dict] = []
    for path in sorted(SAMPLE_KB.glob("*.md")):
        doc = load_file(path)
        for chunk in chunk_document(doc):
            out.append(
                {
                    "n": len(out) + 1,
                    "doc_id": doc.doc_id,
                    "title": doc.title,
                    "context": chunk.context,
                    "text": chunk.text,
                    "score": 0.2 if "superseded" in doc.title else 0.6,
                }
            )
    return out


def of(passages: list[dict], title_start: str) -> list[dict]:
    """The passages of the current document whose title starts so, renumbered from 1 (as a retrieval that found
    only it would give)."""
    return [
        {**p, "n": i}
        for i, p in enumerate(
            (p for p in passages if p["title"].startswith(title_start) and "superseded" not in p["title"]), 1
        )
    ]
