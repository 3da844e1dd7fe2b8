"""Loaders (each format), sentence-aware chunking (English and Chinese), lexical tokens, decay formula.
No model is loaded here."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from knowledge.base import decay_factor
from knowledge.chunking import approx_tokens, chunk_document
from knowledge.loaders import Document, LoadError, Section, discover, iter_jsonl, load_file, parse_date
from knowledge.text import detect_language, lexical_tokens, split_sentences
from tests.knowledge.kb_fixtures import HTML, MD, write_docx, write_pdf


def test_txt(tmp_path):
    p = tmp_path / "note.txt"
    p.write_text("Fever in children\nGive paracetamol by weight. Seek care if it lasts three days.")
    doc = load_file(p, tags=["peds"], source="clinic")
    assert doc.title == "Fever in children"
    assert "paracetamol" in doc.text
    assert doc.tags == ["peds"] and doc.source == "clinic" and doc.language == "en"
    assert doc.date == datetime.fromtimestamp(p.stat().st_mtime).date().isoformat()  # no metadata: the file's date
    assert doc.doc_id == load_file(p).doc_id  # stable id for the same file


def test_md_front_matter_and_headings(tmp_path):
    p = tmp_path / "htn.md"
    p.write_text(MD)
    doc = load_file(p)
    assert doc.title == "Hypertension guide"
    assert doc.date == "2022-03-04"
    headings = [s.heading for s in doc.sections]
    assert "Treatment" in headings and "Monitoring" in headings
    treat = next(s for s in doc.sections if s.heading == "Treatment")
    assert "ACE inhibitors" in treat.text


def test_html_drops_scripts_and_keeps_headings(tmp_path):
    p = tmp_path / "asthma.html"
    p.write_text(HTML)
    doc = load_file(p)
    assert doc.title == "Asthma care"
    assert doc.date == "2021-06-01"
    assert "ignore me" not in doc.text and "Home | About" not in doc.text
    inh = next(s for s in doc.sections if s.heading == "Inhalers")
    assert "corticosteroids" in inh.text and "spacer" in inh.text


def test_docx(tmp_path):
    p = write_docx(
        tmp_path / "gout.docx",
        "Gout",
        [
            ("Acute attack", ["Colchicine or NSAIDs treat an acute attack."]),
            ("Prevention", ["Allopurinol lowers urate."]),
        ],
        created=datetime(2018, 5, 6, 7, 8, 9),
    )
    doc = load_file(p)
    assert doc.title == "Gout"
    assert doc.date == "2018-05-06"
    assert [s.heading for s in doc.sections] == ["Acute attack", "Prevention"]
    assert "Allopurinol" in doc.text


def test_pdf(tmp_path):
    p = write_pdf(
        tmp_path / "copd.pdf",
        ["COPD management", "Long-acting bronchodilators improve symptoms."],
        title="COPD leaflet",
    )
    doc = load_file(p)
    assert doc.title == "COPD leaflet"
    assert doc.date == "2019-03-15"
    assert "bronchodilators" in doc.text


def test_date_override_wins(tmp_path):
    p = tmp_path / "htn.md"
    p.write_text(MD)
    assert load_file(p, date_override="2001-02-03").date == "2001-02-03"


def test_jsonl_bad_line_is_reported_rest_loads(tmp_path):
    p = tmp_path / "bulk.jsonl"
    rows = [
        json.dumps(
            {
                "id": "d1",
                "title": "One",
                "text": "First document.",
                "source": "s",
                "date": "2020-01-02",
                "tags": ["a", "b"],
            }
        ),
        "{not json",
        json.dumps({"id": "d3", "title": "No text"}),
        json.dumps({"id": "d4", "title": "Four", "text": "Fourth.", "date": "yesterday"}),
        json.dumps({"id": "d5", "title": "五", "text": "第五个文件。"}),
    ]
    p.write_text("\n".join(rows) + "\n")
    items = list(iter_jsonl(p))
    docs = [i for i in items if isinstance(i, Document)]
    fails = [i for i in items if not isinstance(i, Document)]
    assert [d.doc_id for d in docs] == ["d1", "d5"]
    assert docs[0].tags == ["a", "b"] and docs[0].date == "2020-01-02" and docs[0].source == "s"
    assert docs[1].language == "zh"
    reasons = [f.reason for f in fails]
    assert reasons[0].startswith("line 2: bad JSON")
    assert reasons[1] == "line 3: missing 'text'"
    assert reasons[2].startswith("line 4: unreadable date")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bad.txt", b"\xff\xfe\xfa not utf8", "not UTF-8"),
        ("empty.md", b"", "empty file"),
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf", "unreadable PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip", "unreadable .docx"),
        ("blank.html", b"<html><body>   </body></html>", "no text found"),
        ("x.exe", b"MZ", "unsupported file type"),
    ],
)
def test_bad_files_have_reasons(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(LoadError, match=reason):
        load_file(p)


def test_discover_recurses_and_reports_unsupported(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.txt").write_text("x")
    (tmp_path / "a" / "b" / "two.md").write_text("y")
    (tmp_path / "a" / "b" / "three.png").write_bytes(b"\x89PNG")
    files, fails = discover([tmp_path / "a", tmp_path / "missing"])
    assert sorted(f.name for f in files) == ["one.txt", "two.md"]
    assert {f.reason for f in fails} == {"unsupported file type .png", "no such file or folder"}


def test_parse_date():
    assert parse_date("2020-5-6") == "2020-05-06"
    assert parse_date("2020") == "2020-01-01"
    assert parse_date("D:20191231235959+01'00'") == "2019-12-31"
    assert parse_date("2021-02-03T10:00:00Z") == "2021-02-03"
    with pytest.raises(LoadError):
        parse_date("2021-02-30")


def test_chinese_sentences_split_at_cjk_punctuation():
    text = "高血压需要长期服药。饮食要少盐！运动有帮助吗？是的。Take it daily. Dr. Smith agrees."
    assert split_sentences(text) == [
        "高血压需要长期服药。",
        "饮食要少盐！",
        "运动有帮助吗？",
        "是的。",
        "Take it daily.",
        "Dr. Smith agrees.",
    ]


def test_chunks_respect_budget_overlap_and_keep_heading_context():
    sentences = [f"Sentence number {i} talks about blood pressure control." for i in range(40)]
    doc = Document("d", "Guide", [Section("Treatment", " ".join(sentences))])
    chunks = chunk_document(doc, approx_tokens, chunk_tokens=60, overlap_tokens=15)
    assert len(chunks) > 3
    for c in chunks:
        assert c.context == "Guide — Treatment"
        assert c.indexed_text.startswith("Guide — Treatment\n")
        assert approx_tokens(c.context) + approx_tokens(c.text) <= 60 + 15  # budget (one sentence's slack)
        assert c.text.endswith(".")  # sentence-aware: no chunk ends mid-sentence
    # overlap: each chunk starts with the last sentence of the previous one
    for a, b in zip(chunks, chunks[1:]):
        assert b.text.split(". ")[0] + "." in a.text
    assert [c.chunk_id for c in chunks] == [f"d#{i:05d}" for i in range(len(chunks))]
    # stable: same input, same chunks
    assert [c.text for c in chunk_document(doc, approx_tokens, 60, 15)] == [c.text for c in chunks]


def test_chinese_chunking_uses_cjk_boundaries():
    text = "".join(f"第{i}句讲的是糖尿病的饮食控制和运动。" for i in range(30))
    doc = Document("z", "糖尿病", [Section("", text)])
    chunks = chunk_document(doc, approx_tokens, chunk_tokens=60, overlap_tokens=10)
    assert len(chunks) > 3
    assert all(c.text.endswith("。") for c in chunks)
    assert all(c.language == "zh" for c in chunks)


def test_lexical_tokens_english_and_chinese():
    assert lexical_tokens("What are the symptoms of Gout?") == ["symptoms", "gout"]
    toks = lexical_tokens("糖尿病的症状有哪些")
    assert "糖尿病" in toks and "症状" in toks and "的" not in toks
    assert detect_language("糖尿病的症状有哪些") == "zh" and detect_language("gout") == "en"


def test_decay_formula():
    today = date(2026, 1, 1)
    assert decay_factor("2026-01-01", today, 0.9, 365.25) == 1.0
    two_years = (today - date(2024, 1, 1)).days
    assert decay_factor("2024-01-01", today, 0.9, 365.25) == pytest.approx(0.9 ** (two_years / 365.25))
    assert decay_factor("2030-01-01", today, 0.9, 365.25) == 1.0  # future dates do not boost
    assert decay_factor("", today, 0.9, 365.25) == 1.0
