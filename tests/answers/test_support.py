"""Which passage line answers a question, and whether one line supports an answer sentence: table rows for
the patient asked about, age bands, renal doses in Chinese, drugs and polarity."""

from __future__ import annotations

from knowledge.quantities import blood_pressures, consistent, patient_bands, quantities
from knowledge.support import Question, Support, quote
from tests.answers.conftest import of


def best(passages, question):
    support = Support(question, passages)
    picks = support.best_lines()
    assert picks, question
    return quote(picks[0], support.question)


def test_the_row_for_the_weight_asked_about(sample_passages):
    fever = of(sample_passages, "Fever in children")
    assert "20 kg: 300 mg, which is 12.5 mL" in best(fever, "How much paracetamol should I give a 20 kg child?")
    assert "10 kg: 150 mg, which is 6 mL" in best(fever, "paracetamol dose for a toddler of 10 kilograms")
    assert "5 kg: 75 mg" in best(fever, "How much paracetamol for a baby of 5 kg?")


def test_a_weight_with_no_row_borrows_no_row(sample_passages):
    fever = of(sample_passages, "Fever in children")
    support = Support("What dose of paracetamol for a 35 kg child?", fever)
    answer = " ".join(quote(p, support.question) for p in support.best_lines())
    assert "15 mg per kg" in answer
    for row in ("75 mg", "150 mg", "225 mg", "300 mg", "12.5 mL"):
        assert row not in answer
    assert support.unmatched_patient() == "35 kg"


def test_the_age_band_picks_the_target(sample_passages):
    bp = of(sample_passages, "Hypertension")
    assert "150/90" in best(bp, "What is the blood pressure target for an 80-year-old?")
    under = best(bp, "What blood pressure should a 60 year old aim for?")
    assert "140/90" in under and "150/90" not in under


def test_a_chinese_qualifier_picks_the_renal_dose(sample_passages):
    flu = of(sample_passages, "流感的")
    assert "30 mg" in best(flu, "肾功能不全的成人奥司他韦剂量是多少？")
    assert "75 mg" in best(flu, "成人奥司他韦的剂量是多少？")


def test_which_drug_questions_name_a_drug(sample_passages):
    otitis = of(sample_passages, "Acute otitis media in adults")
    line = best(otitis, "What is the first-line antibiotic for an ear infection, and for how long?")
    assert "amoxicillin 500 mg three times daily for 5 days" in line
    assert "clarithromycin" in best(otitis, "Which antibiotic if the patient with otitis is allergic to penicillin?")


def test_claims_need_one_line_with_the_numbers_the_patient_and_the_drug(sample_passages):
    fever = of(sample_passages, "Fever in children")
    support = Support("How much paracetamol should I give a 20 kg child?", fever)
    assert support.check("Give 300 mg, which is 12.5 mL [1].").supported
    wrong_row = support.check("Give 75 mg, which is 3 mL.")
    assert not wrong_row.supported and wrong_row.reason == "patient"
    assert not support.check("Give ibuprofen 300 mg.").supported  # the numbers are paracetamol's row
    assert not support.check("Give 500 mg every 6 hours.").supported


def test_a_general_line_does_not_support_a_number_a_specific_line_overrides(sample_passages):
    bp = of(sample_passages, "Hypertension")
    support = Support("What is the blood pressure target for an 80-year-old?", bp)
    assert support.check("The target is below 150/90 mmHg.").supported
    assert not support.check("The target is below 140/90 mmHg.").supported


def test_polarity_must_agree(sample_passages):
    pneumonia = of(sample_passages, "Community-acquired pneumonia")
    support = Support("Can I give doxycycline in pregnancy for pneumonia?", pneumonia)
    assert support.check("Do not give doxycycline in pregnancy.").supported
    verdict = support.check("Doxycycline can be given in pregnancy.")
    assert not verdict.supported


def test_chinese_claims(sample_passages):
    flu = of(sample_passages, "流感的")
    support = Support("肾功能不全的成人奥司他韦剂量是多少？", flu)
    assert support.check("肾功能不全时奥司他韦减为 30 mg，每日两次，连用 5 天。").supported
    assert not support.check("肾功能不全时奥司他韦 75 mg，每日两次。").supported


def test_question_reads_what_is_asked():
    q = Question.read("How long and how often should a 20 kg child take amoxicillin?")
    assert {"duration", "frequency"} <= q.wants and q.bands == [(20.0, 20.0, "kg")]
    assert Question.read("What is otitis media?").factual is False


def test_quantity_helpers():
    assert blood_pressures("below 140/90 mmHg; 150/90 over 80") == {"140/90", "150/90"}
    assert patient_bands("aged 80 or over") == [(80.0, float("inf"), "y")]
    assert patient_bands("肌酐清除率 30 至 60 mL/min") == [(30.0, 60.0, "ml/min")]
    assert consistent([(45.0, 45.0, "ml/min")], patient_bands("30 至 60 mL/min"))
    assert not consistent([(20.0, 20.0, "kg")], patient_bands("5 kg: 75 mg"))
    assert quantities("每日两次，连用 5 天") == {(2.0, "times"), (5.0, "d")}


def test_a_line_for_everyone_does_not_answer_for_a_special_case(sample_passages):
    otitis = of(sample_passages, "Acute otitis media in adults")
    allergic = Support("Which antibiotic for otitis media if the patient is allergic to penicillin?", otitis)
    assert not allergic.check("Amoxicillin 500 mg three times daily for 5 days [1].").supported
    assert allergic.check("Clarithromycin 500 mg twice daily for 5 days [1].").supported
    pneumonia = of(sample_passages, "Community-acquired pneumonia")
    pregnant = Support("What clarithromycin dose for pneumonia in pregnancy?", pneumonia)
    assert pregnant.best_lines() == []  # the page gives no dose for pregnancy
    assert not pregnant.check("Clarithromycin 500 mg twice daily for 5 days.").supported


def test_a_number_with_a_unit_the_checks_do_not_know_is_still_a_claim(sample_passages):
    fever = of(sample_passages, "Fever in children")
    support = Support("How much paracetamol should I give a 20 kg child?", fever)
    assert not support.check("Give the child 800 IUs of paracetamol per day.").supported
    assert not support.check("Give paracetamol 7 times.").supported
    assert support.check("Give 300 mg, which is 12.5 mL, of the 120 mg in 5 mL suspension [1].").supported


def test_a_line_about_another_drug_on_the_page_does_not_answer_and_faq_questions_state_nothing():
    page = [
        {
            "n": 1,
            "doc_id": "ir",
            "title": "Insulin resistance and prediabetes",
            "score": 1.0,
            "text": "What is insulin resistance? Insulin resistance is a condition in which the body does not use "
            "insulin well. Adults may take up to 4,000 IU of vitamin D a day.",
        }
    ]
    support = Support("How many units of insulin should a type 1 diabetic inject per day?", page)
    assert support.best_lines() == []
    assert not support.check("Inject up to 4,000 IU a day [1].").supported
    what = Support("What is insulin resistance?", page)
    assert [p.line.text for p in what.best_lines()][0].startswith("Insulin resistance is a condition")
