"""Query-focused passages: within the budget, the sentences that answer the question are kept, every passage
keeps something (its [n] still names a citation), and the kept sentences stay in their own order."""

from __future__ import annotations

from knowledge.focus import GAP, focus_passages
from knowledge.text import split_sentences

OTITIS = (
    "Acute otitis media is an infection of the middle ear that is common in young children. "
    "The eardrum is often red and bulging on examination. "
    "In adults it is treated with amoxicillin 500 mg three times daily for 5 to 7 days. "
    "Patients allergic to penicillin receive azithromycin 500 mg once daily for 3 days. "
    "Tympanostomy tubes are considered for children with recurrent episodes."
)
ASTHMA = (
    "Asthma is a chronic disease of the airways. "
    "Inhaled corticosteroids are the basis of long-term control. "
    "A short-acting beta agonist relieves acute symptoms."
)
FLU = "流感是一种由流感病毒引起的急性呼吸道传染病。成人可服用奥司他韦75毫克，每日两次，连用5天。注意休息和补充水分。"


def words(text: str) -> int:
    """A stand-in token count: a word each, a token per two Chinese characters."""
    cjk = sum("\u3400" <= ch <= "\u9fff" for ch in text)
    return len(text.split()) + cjk // 2


def test_passages_that_fit_are_left_whole() -> None:
    texts = [OTITIS, ASTHMA]
    assert focus_passages("How is otitis treated?", texts, 10_000, words) == texts


def test_the_answering_sentence_is_kept_within_the_budget() -> None:
    out = focus_passages("How should an adult with a middle ear infection be treated?", [OTITIS, ASTHMA], 45, words)
    assert "amoxicillin 500 mg three times daily for 5 to 7 days" in out[0]
    assert "Tympanostomy" not in out[0]  # does not bear on the question: left out
    assert len(out) == 2 and out[1].removesuffix(GAP.rstrip()) in ASTHMA  # the other keeps its best sentence
    assert sum(words(t) for t in out) <= 45 + 4  # (the gap marks)
    # in the passage's own order, the cut marked where sentences were left out
    kept = [s for s in split_sentences(OTITIS) if s in out[0]]
    assert out[0].replace(GAP.strip(), "").split() == " ".join(kept).split()
    assert GAP.strip() in out[0]


def test_every_passage_keeps_a_sentence_even_when_the_budget_is_tiny() -> None:
    out = focus_passages("penicillin allergy", [ASTHMA, OTITIS, FLU], 1, words)
    assert len(out) == 3 and all(out)
    assert "azithromycin" in out[1]  # the one sentence kept is the one about the question


def test_chinese_sentences_are_picked_by_their_words_and_joined_without_spaces() -> None:
    out = focus_passages("成人流感应该吃什么药？", [FLU, OTITIS], 40, words)
    assert "奥司他韦75毫克" in out[0]
    sentences = split_sentences(FLU)
    if sentences[0] in out[0]:
        assert f"{sentences[0]}{sentences[1]}" in out[0]  # neighbours: no space between Chinese sentences


def test_english_word_forms_meet() -> None:
    """ "treated" in the question finds "treatment" in a passage, "adults" finds "adult"."""
    text = (
        "Otitis media is common. Its treatment in an adult is amoxicillin. "
        "The ear may discharge. Children get it more often."
    )
    out = focus_passages("How are adults treated for otitis?", [text], 12, words)
    assert "amoxicillin" in out[0]
