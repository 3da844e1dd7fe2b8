"""workers/answering.py: what happens to each streamed sentence. The LLM's stream is played back from fixed
sentences here (the real model's answers are checked end to end in tests/consultation/test_answer_safety.py),
so each path — kept, replaced by the quoted line, dropped, style-cleaned, stopped after enough — is certain."""

from __future__ import annotations

from types import SimpleNamespace

from tests.answers.conftest import of
from workers.answering import answer, select

SETTINGS = SimpleNamespace(
    consult_safety=True,
    consult_answer_mode="extractive",
    consult_relative_floor=0.4,
    consult_min_coverage=0.6,
    consult_max_sentences=3,
    consult_attribute_citations=True,
    tts_max_chars=600,
)


def played(*sentences: str):
    """generate() that streams these sentences, honouring stop() as the engine does between tokens."""

    def generate(on_sentence, stop):
        n = 0
        for s in sentences:
            if stop():
                return {"cancelled": True, "timings": {}, "finish_reason": "cancelled"}
            on_sentence(s)
            n += 1
        return {"cancelled": False, "timings": {}, "finish_reason": "stop", "played": n}

    return generate


def run(question, passages, *sentences, missing="", **overrides):
    settings = SimpleNamespace(**{**vars(SETTINGS), **overrides})
    spoken: list[str] = []
    out = answer(
        question, "en", passages, settings, spoken.append, played(*sentences) if sentences else None, missing=missing
    )
    assert spoken == out.sentences
    return out


def test_a_dose_question_is_quoted_without_the_llm(sample_passages):
    fever = of(sample_passages, "Fever in children")
    out = run("How much paracetamol should I give a 20 kg child?", fever)
    assert out.mode == "extractive" and out.generation is None
    assert out.sentences == ["Paracetamol by weight (120 mg in 5 mL suspension): 20 kg: 300 mg, which is 12.5 mL [3]."]


def test_generated_sentences_are_kept_replaced_or_dropped(sample_passages):
    fever = of(sample_passages, "Fever in children")
    out = run(
        "How much paracetamol should I give a 20 kg child?",
        fever,
        "**Based on the context provided**, give 300 mg, which is 12.5 mL [2].",  # cleaned, kept, re-cited
        "Give 75 mg, which is 3 mL [3].",  # the 5 kg row: replaced by the 20 kg line
        "Give the child 525 mg by mouth.",  # invented: the 20 kg line is already said, so dropped
        consult_answer_mode="generative",
    )
    assert [c.action for c in out.claims] == ["kept", "replaced", "dropped"]
    assert [c.reason for c in out.claims] == ["supported", "patient", "numbers"]
    assert out.sentences[0] == "Give 300 mg, which is 12.5 mL [3]."
    assert "20 kg: 300 mg" in out.sentences[1] and out.guard_fired and out.style["cleaned"] == 1


def test_echoes_fragments_and_reasoning_fall_back_to_the_line(sample_passages):
    otitis = of(sample_passages, "Acute otitis media in adults")
    out = run(
        "Which antibiotic for otitis media if the patient is allergic to penicillin?",
        otitis,
        "Let's look at the antibiotics section.",
        "Clarithromycin.",
        "Which antibiotic for otitis media if the patient is allergic to penicillin?",
        consult_answer_mode="generative",
    )
    assert [c.reason for c in out.claims] == ["style", "fragment", "echo"]
    assert out.sentences == ["Antibiotics: Penicillin allergy: clarithromycin 500 mg twice daily for 5 days [3]."]


def test_generation_stops_after_the_sentence_limit(sample_passages):
    otitis = of(sample_passages, "Acute otitis media in adults")
    out = run(
        "What is acute otitis media?",
        otitis,
        "Acute otitis media is an infection of the middle ear [1].",
        "Most cases settle without antibiotics within 3 days [1].",
        "Offer pain relief to every patient [1].",
        "Refer the same day for swelling behind the ear [4].",
        consult_max_sentences=2,
        consult_answer_mode="generative",
    )
    assert len(out.sentences) == 2 and out.mode == "generated"


def test_nothing_covered_names_the_missing_topic(sample_passages):
    chosen = select("What is the starting dose of metformin?", sample_passages, SETTINGS)
    assert chosen.passages == [] and not chosen.answerable
    out = run("What is the starting dose of metformin?", chosen.passages, missing=chosen.verdict["missing"])
    assert out.mode == "no_answer" and out.sentences == ["The knowledge base has nothing on metformin."]


def test_select_keeps_the_covering_document_renumbered_and_drops_far_passages(sample_passages):
    chosen = select("How long should amoxicillin be given for otitis media?", sample_passages, SETTINGS)
    assert chosen.answerable and [p["n"] for p in chosen.passages] == list(range(1, len(chosen.passages) + 1))
    assert {p["title"] for p in chosen.passages} == {"Acute otitis media in adults"}  # the 2011 edition sinks
    assert chosen.verdict["dropped_far"] > 0


def test_a_line_that_plainly_answers_a_descriptive_question_is_quoted(sample_passages):
    otitis = of(sample_passages, "Acute otitis media in adults")
    out = run("What is acute otitis media?", otitis)
    assert out.mode == "extractive" and out.generation is None
    assert out.sentences[0].startswith("Acute otitis media is an infection of the middle ear")
    out = run("What is acute otitis media and how is the pain relieved?", otitis, "Offer pain relief [2].")
    assert out.mode == "generated"  # no one line says all of it: the model phrases it, checked


def test_a_fact_no_line_states_is_refused_not_guessed(sample_passages):
    pneumonia = of(sample_passages, "Community-acquired pneumonia")
    out = run("What clarithromycin dose for pneumonia in pregnancy?", pneumonia, "Give 500 mg twice daily.")
    assert out.mode == "no_answer" and out.generation is None
    assert out.sentences == ["The knowledge base gives no dose for clarithromycin and pneumonia and pregnancy."]


def test_a_descriptive_answer_quotes_the_line_and_the_next_one_its_heading_said_once():
    page = [
        {
            "n": 1,
            "doc_id": "c",
            "title": "Cyclosporiasis",
            "context": "Cyclosporiasis — Treatment",
            "score": 1.0,
            "text": "cyclosporiasis is treated with trimethoprim-sulfamethoxazole for seven days. "
            "People with weak immune systems may need longer treatment.",
        }
    ]
    out = run("What are the treatments for cyclosporiasis?", page)
    assert out.mode == "extractive" and len(out.sentences) == 2
    assert out.sentences[0].startswith("Treatment: cyclosporiasis is treated")
    assert out.sentences[1].startswith("People with weak immune systems")  # no second "Treatment:"


def test_may_i_questions_quote_the_group_and_the_drug_for_it(sample_passages):
    flu = of(sample_passages, "流感的")
    spoken: list[str] = []
    out = answer("我老婆怀孕了，现在得了流感，要不要吃抗病毒的药？", "zh", flu, SETTINGS, spoken.append, None)
    assert out.mode == "extractive" and "孕妇" in spoken[0] and "奥司他韦" in spoken[1]
