"""workers/grounding.py: numbered passages, citation markers, and the numbers guard."""

from __future__ import annotations

from workers.grounding import (
    NO_ANSWER,
    NumbersGuard,
    attribute,
    cited_numbers,
    context_texts,
    no_answer,
    passages_from_hits,
    quantities,
    unverified,
)

HITS = [
    {
        "chunk_id": "c1",
        "doc_id": "amox",
        "title": "Amoxicillin",
        "source": "formulary.md",
        "score": 0.81,
        "text": "Adults with acute otitis media take amoxicillin 500 mg three times daily for 5 to 7 days. "
        "Children receive 40 mg/kg per day split into 2 doses.",
    },
    {
        "chunk_id": "c2",
        "doc_id": "ibu",
        "title": "Ibuprofen",
        "source": "formulary.md",
        "score": 0.52,
        "text": "Ibuprofen 400 mg may be taken every 6 hours. Do not exceed 1,200 mg per day without advice.",
    },
    {"chunk_id": "c3", "doc_id": "x", "title": "", "source": "", "score": 0.4, "text": "   "},
]


def test_passages_are_numbered_from_one_and_skip_empty_text():
    ps = passages_from_hits(HITS, k=5)
    assert [p["n"] for p in ps] == [1, 2]
    assert ps[0]["doc_id"] == "amox" and ps[0]["score"] == 0.81
    assert passages_from_hits(HITS, k=1)[0]["chunk_id"] == "c1" and len(passages_from_hits(HITS, k=1)) == 1
    assert context_texts(ps)[0].startswith("(Amoxicillin) Adults")


def test_cited_numbers_in_order_and_only_known():
    assert cited_numbers("Take 500 mg [2]. See also [1] and [2] and [9].", known=[1, 2]) == [2, 1]
    assert cited_numbers("no markers") == []


def test_no_answer_follows_the_language():
    assert no_answer("en") == NO_ANSWER["en"] and no_answer(None) == NO_ANSWER["en"]
    assert no_answer("zh") == NO_ANSWER["zh"]
    assert unverified("zh-CN").endswith("[1]。") and unverified("en").endswith("[1].")


def test_quantities_normalise_units_and_ranges():
    # spelled-out and word counts are frequencies too: "three times", "twice"
    assert quantities("500 mg three times daily for 5 to 7 days") == {
        (500.0, "mg"),
        (3.0, "times"),
        (5.0, "d"),
        (7.0, "d"),
    }
    assert quantities("clarithromycin 500 mg twice daily") == {(500.0, "mg"), (2.0, "times")}
    assert quantities("500mg, 2 tablets, 10 milligrams, every 6 hrs") == {
        (500.0, "mg"),
        (2.0, "tablet"),
        (10.0, "mg"),
        (6.0, "h"),
    }
    assert quantities("40 mg/kg per day") == {(40.0, "mg/kg")}
    assert quantities("每次10毫克，每日3次，连用7天") == {(10.0, "mg"), (3.0, "times"), (7.0, "d")}
    assert quantities("1,200 mg") == {(1200.0, "mg")}
    assert quantities("Section 4 and page 12 say nothing dosed.") == set()


def test_guard_keeps_supported_numbers():
    guard = NumbersGuard(passages_from_hits(HITS, 5))
    r = guard.check("Adults take 500 mg three times daily for 5 to 7 days [1].")
    assert r.text == "Adults take 500 mg three times daily for 5 to 7 days [1]." and not r.fired
    assert guard.check("Amoxicillin is a penicillin [1].").fired is False
    assert guard.fired is False


def test_guard_replaces_an_unsupported_dose_with_the_passage_sentence():
    guard = NumbersGuard(passages_from_hits(HITS, 5))
    r = guard.check("Adults with otitis media take amoxicillin 875 mg for 10 days [1].")
    assert r.fired and guard.fired
    assert r.text == ("Adults with acute otitis media take amoxicillin 500 mg three times daily for 5 to 7 days. [1]")
    assert sorted(r.unsupported) == ["10 d", "875 mg"]


def test_guard_replaces_with_one_clause_of_a_sentence_cut_at_semicolons():
    guard = NumbersGuard(
        passages_from_hits(
            [
                {
                    "chunk_id": "g",
                    "doc_id": "htn",
                    "title": "Hypertension",
                    "score": 0.7,
                    "text": "Aim for a clinic blood pressure below 140/90 mmHg in adults under 80; "
                    "aim for below 150/90 mmHg in adults aged 80 and over. Recheck in 4 weeks.",
                }
            ],
            5,
        )
    )
    r = guard.check("Adults aged 80 and over should aim for below 130/80 mmHg [1].")
    assert r.fired
    assert r.text == "aim for below 150/90 mmHg in adults aged 80 and over. [1]"


def test_guard_checks_against_the_cited_passage_only():
    guard = NumbersGuard(passages_from_hits(HITS, 5))
    # 400 mg is in passage 2, but the sentence cites passage 1 only.
    r = guard.check("Amoxicillin 400 mg every 6 hours [1].")
    assert r.fired
    # Without a marker, any given passage may support it.
    assert guard.check("Ibuprofen 400 mg every 6 hours.").fired is False


def test_guard_drops_an_unsupported_sentence_nothing_matches():
    guard = NumbersGuard(passages_from_hits(HITS, 5))
    r = guard.check("Metformin 2 g nightly helps sleep [2].")
    assert r.fired and r.text is None


def test_attribution_adds_the_best_passage_marker_before_the_full_stop():
    ps = passages_from_hits(HITS, 5)
    assert attribute("Amoxicillin treats acute otitis media in adults.", ps) == (
        "Amoxicillin treats acute otitis media in adults [1]."
    )
    assert attribute("Ibuprofen may be taken every few hours!", ps) == "Ibuprofen may be taken every few hours [2]!"
    assert attribute("Already cited [2].", ps) == "Already cited [2]."  # a model's own marker is kept
    assert attribute("The weather on Mars is cold and dusty.", ps) == "The weather on Mars is cold and dusty."
    assert attribute("Yes.", ps) == "Yes."
    assert attribute("Amoxicillin treats otitis.", []) == "Amoxicillin treats otitis."


def test_every_no_answer_reply_is_canned_and_a_quote_after_a_note_is_not():
    from workers.grounding import NO_FACT, is_canned, no_answer

    assert is_canned(no_answer("en", "metformin")) and is_canned(no_answer("zh", "二甲双胍"))
    assert is_canned(NO_FACT["en"].format(fact="dose", topic="clarithromycin and pregnancy"))
    assert is_canned(NO_FACT["zh"].format(fact="剂量", topic="孩子"))
    assert not is_canned("知识库中没有 35 kg 的对应条目，以下是一般规则。成人剂量:奥司他韦 75 mg [1]。")
    assert not is_canned("Amoxicillin 500 mg three times daily for 5 days [1].")
