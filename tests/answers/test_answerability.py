"""The answerability gate: a question about something the passages do not speak of is refused, naming it;
a clinician's everyday words for what they do cover still pass."""

from __future__ import annotations

import pytest

from knowledge.answerability import assess
from knowledge.terms import TextIndex, question_terms

UNCOVERED = [
    ("What is the starting dose of metformin for type 2 diabetes?", "metformin"),
    ("What INR target should a patient on warfarin have?", "INR or warfarin"),
    ("What is the treatment for a broken leg?", "broken leg"),
    ("Which inhaler should an adult with asthma use?", "inhaler or asthma"),
    ("What dose of atorvastatin lowers cholesterol?", "atorvastatin or cholesterol"),
    ("糖尿病患者二甲双胍的起始剂量是多少？", "二甲双胍"),
    ("华法林的剂量怎么调整？", "华法林"),
]

COVERED = [
    "How much paracetamol should I give a 20 kg child?",
    "Which antibiotic for an ear infection in an adult?",
    "Which blood pressure medicine should a 60-year-old start?",
    "How much paracetamol for a baby of 5 kilograms?",
    "My kid has a fever, what can I give?",
    "How long should amoxicillin be given for pneumonia?",
    "What do I give for an ear infection if the patient is allergic to penicillin?",
    "肾功能不全的成人奥司他韦剂量是多少？",
    "流感病人吃什么药？",
    "孕妇得了流感怎么办？",
]


@pytest.mark.parametrize("question,missing", UNCOVERED)
def test_uncovered_topics_are_refused_and_named(sample_passages, question, missing):
    verdict = assess(question, sample_passages)
    assert not verdict.answerable and verdict.keep == []
    assert verdict.missing == missing


@pytest.mark.parametrize("question", COVERED)
def test_covered_questions_pass_in_the_clinicians_words(sample_passages, question):
    verdict = assess(question, sample_passages)
    assert verdict.answerable, verdict
    assert verdict.keep


def test_only_the_covering_documents_are_kept(sample_passages):
    verdict = assess("How much paracetamol should I give a 20 kg child?", sample_passages)
    kept = {p["title"] for p in sample_passages if p["n"] in verdict.keep}
    assert kept == {"Fever in children, paracetamol dosing by weight"}


def test_a_special_population_the_document_does_not_cover_is_refused(sample_passages):
    # the otitis page is about adults: a child's dose is not on it
    adults = [p for p in sample_passages if p["title"] == "Acute otitis media in adults"]
    verdict = assess("What amoxicillin dose for otitis media in a child?", adults)
    assert not verdict.answerable and verdict.missing == "this for child"


def test_terms_across_two_documents_do_not_make_one_answer(sample_passages):
    # amoxicillin is on the otitis page, hypertension on another: no one document answers it
    verdict = assess("What dose of amoxicillin treats hypertension?", sample_passages)
    assert not verdict.answerable


def test_nothing_retrieved_names_the_topic():
    verdict = assess("What is the dose of metformin?", [])
    assert not verdict.answerable and verdict.missing == "metformin"


def test_terms_drop_the_question_frame_and_mark_rare_words():
    terms = {t.surface: t for t in question_terms("What is the usual starting dose of metformin for a patient?")}
    assert set(terms) == {"metformin"} and terms["metformin"].specific


def test_coverage_matches_stems_british_spellings_and_chinese_pairs():
    text = TextIndex("Paediatric infections: amoxicillin for children. 应尽早使用奥司他韦。")
    covers = {t.surface: text.covers(t) for t in question_terms("pediatric infection in a kid 奥司他韦")}
    assert covers == {"pediatric": True, "infection": True, "kid": True, "奥司他韦": True}


def test_a_named_condition_must_appear_as_named():
    page = [
        {
            "n": 1,
            "doc_id": "hcl",
            "title": "Hairy cell leukemia",
            "text": "Hairy cell leukemia is a rare, chronic cancer of B lymphocytes.",
        }
    ]
    assert assess("How to diagnose hairy cell leukemia?", page).answerable
    other = assess("What are the symptoms of chronic lymphocytic leukemia?", page)
    assert not other.answerable and other.missing == "lymphocytic leukemia"


def test_brand_and_us_names_reach_the_guideline_name(sample_passages):
    assert assess("What is the Tylenol dose for a 20 kg kid?", sample_passages).answerable
    assert assess("Acetaminophen dose for a child of 10 kg?", sample_passages).answerable
    assert not assess("What is the dose of Glucophage?", sample_passages).answerable


def test_a_rare_word_and_the_next_name_one_thing():
    pituitary = [
        {
            "n": 1,
            "doc_id": "pit",
            "title": "Pituitary tumors",
            "text": "The pituitary gland signals the adrenal glands to make cortisol; tumors may cause cancer.",
        }
    ]
    refused = assess("What is adrenal gland cancer?", pituitary)
    assert not refused.answerable
    adrenal = [
        {
            "n": 1,
            "doc_id": "adr",
            "title": "Adrenal gland cancer",
            "text": "Adrenal gland cancer is rare. It starts in the adrenal glands.",
        }
    ]
    assert assess("What is adrenal gland cancer?", adrenal).answerable


def test_a_chinese_question_reaches_an_english_page_and_the_reverse(sample_passages):
    from knowledge.terms import other_script_words

    assert other_script_words("成人急性中耳炎首选什么抗生素？") == "adult otitis media antibiotic"
    assert "流感" in other_script_words("What is the adult dose of oseltamivir for flu?")
    otitis = [p for p in sample_passages if p["title"] == "Acute otitis media in adults"]
    assert assess("成人急性中耳炎首选什么抗生素？用几天？", otitis).answerable
    flu = [p for p in sample_passages if p["title"] == "流感的门诊治疗"]
    assert assess("What is the adult dose of oseltamivir for flu?", flu).answerable
