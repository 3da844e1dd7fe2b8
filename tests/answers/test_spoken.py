"""Sentences meant to be heard: markdown, lists, lead-ins and reasoning out loud go; echoes and fragments
are recognised."""

from __future__ import annotations

from knowledge.spoken import clean, is_echo, is_fragment


def test_markdown_and_list_markers_go():
    assert clean("**Amoxicillin** 500 mg three times daily [1].") == "Amoxicillin 500 mg three times daily [1]."
    assert clean("1. Start ramipril 2.5 mg once daily [2].") == "Start ramipril 2.5 mg once daily [2]."
    assert clean("- `Clarithromycin` is the alternative.") == "Clarithromycin is the alternative."
    assert clean("## Treatment:") is None


def test_lead_ins_go_and_the_sentence_starts_with_a_capital():
    assert clean("Based on the context provided, amoxicillin is first-line [1].") == "Amoxicillin is first-line [1]."
    assert clean("According to the passage [1], give 300 mg.") == "Give 300 mg."
    assert clean("根据提供的资料，奥司他韦 75 mg，每日两次 [1]。") == "奥司他韦 75 mg，每日两次 [1]。"


def test_reasoning_out_loud_is_not_spoken():
    assert clean("Let's analyze the table for a 20 kg child.") is None
    assert clean("The question asks about the dose.") is None
    assert clean("首先，我们需要看剂量表。") is None


def test_echo_and_fragment():
    q = "How much paracetamol should I give a 20 kg child?"
    assert is_echo("How much paracetamol should you give a 20 kg child [1]?", q)
    assert not is_echo("Give 300 mg, which is 12.5 mL, of the 120 mg in 5 mL suspension [1].", q)
    assert is_fragment("Penicillin allergy.") and is_fragment("Amoxicillin [1].")
    assert not is_fragment("Clarithromycin 500 mg twice daily for 5 days [1].")
    assert is_fragment("青霉素过敏。") and not is_fragment("成人剂量：奥司他韦 75 mg，每日两次。")


def test_a_line_too_long_to_speak_is_cut_at_clauses_with_every_word_kept():
    from knowledge.spoken import pieces

    line = "; ".join(f"item {i} is a long clause about insulin, glucose and weight" for i in range(20)) + " [1]."
    out = pieces(line, 120)
    assert all(len(p) <= 120 for p in out) and len(out) > 5
    assert " ".join(out).split() == line.split()
    assert pieces("Short [1].", 120) == ["Short [1]."]
    zh = "，".join(["奥司他韦七十五毫克每日两次"] * 30) + "。"
    assert all(len(p) <= 50 for p in pieces(zh, 50)) and "".join(pieces(zh, 50)) == zh
