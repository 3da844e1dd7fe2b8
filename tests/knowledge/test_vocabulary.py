"""The knowledge base's vocabulary for the ear: what is picked from documents, how it is ranked, bounded,
matched to the speech's script, and written so the asr pool can read it while the rag pool holds the store."""

from __future__ import annotations

import json
from types import SimpleNamespace

from knowledge import vocabulary
from knowledge.vocabulary import VocabularyBuilder
from workers.core.settings import Settings
from workers.engines import vocabulary as ear


def doc(title: str, date: str = "", tags: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(title=title, date=date, tags=tags or [])


def test_technical_words_and_eponyms_are_picked_and_ranked():
    b = VocabularyBuilder()
    b.add(
        ["a", "a"],
        [
            "Acute otitis media is treated with amoxicillin for five days.",
            "Patients allergic to penicillin receive azithromycin instead.",
        ],
    )
    b.add(["b"], ["In Kaposi sarcoma the lesions respond to therapy. Amoxicillin is not used. Doctors agree."])
    b.add(["c"], ["Amoxicillin dosing by weight; the nurse checks the temperature."])
    terms = b.finish(
        [
            doc("Otitis media in adults", "2025-01-10", ["ENT"]),
            doc("Kaposi sarcoma", "2019-03-01"),
            doc("Fever in children", "2024-05-01"),
        ]
    )
    # titles newest first, then tags, then passage words by how many documents use them
    assert terms[:4] == ["Otitis media in adults", "Fever in children", "Kaposi sarcoma", "ENT"]
    assert terms[4] == "amoxicillin"  # in three documents
    assert {"azithromycin", "penicillin"} <= set(terms)
    # plain words, sentence-initial capitals and words already in a title stay out
    assert not {"Patients", "Doctors", "temperature", "therapy", "otitis", "Kaposi", "sarcoma"} & set(terms)


def test_bounded_keeps_the_most_important_terms_within_the_limit():
    terms = ["Otitis media in adults", "amoxicillin", "azithromycin", "paracetamol"]
    assert ear.bounded(terms, 40) == "Otitis media in adults, amoxicillin"
    assert len(ear.bounded(terms * 50, 400)) <= 400
    assert ear.bounded(terms, 40, fixed="medvoice") == "medvoice, Otitis media in adults, amoxicillin"
    assert ear.bounded([], 400) is None and ear.bounded(terms, 0) is None


def test_terms_follow_the_script_of_the_speech():
    terms = ["Hypertension in adults", "高血压的治疗", "amlodipine", "氨氯地平"]
    assert ear.in_language(terms, "zh") == ["高血压的治疗", "氨氯地平"]
    assert ear.in_language(terms, "en") == ["Hypertension in adults", "amlodipine"]


def test_the_vocabulary_file_is_written_whole_and_read_back(tmp_path):
    s = Settings(data_dir=tmp_path, kb_dir=tmp_path / "kb", asr_kb_vocabulary_chars=30)
    assert ear.kb_terms(s) == [] and ear.hotwords(s, "en") is None  # nothing ingested yet
    vocabulary.write(tmp_path / "kb", 3, ["Otitis media in adults", "amoxicillin", "高血压"])
    assert json.loads((tmp_path / "kb" / "vocabulary.json").read_text())["generation"] == 3
    assert ear.hotwords(s, "en") == "Otitis media in adults"
    assert ear.hotwords(s, "zh") == "高血压"
    assert ear.hotwords(s.model_copy(update={"asr_kb_vocabulary": False}), "en") is None
    (tmp_path / "kb" / "vocabulary.json").write_text("{not json")
    assert vocabulary.read(tmp_path / "kb") == []  # a damaged file means no hotwords, not a failed transcription
    assert not list((tmp_path / "kb").glob(".*.tmp"))
