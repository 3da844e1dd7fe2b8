"""The streaming sentence splitter: Chinese, English, mixed text, numbers, abbreviations, first-chunk commas."""

from __future__ import annotations

import random

import pytest

from workers.engines.splitter import SentenceSplitter, split_sentences, weighted_len


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "每天服用一次。如果疼痛持续，请就医！好吗？是的；谢谢",
            ["每天服用一次。", "如果疼痛持续，请就医！", "好吗？", "是的；", "谢谢"],
        ),
        (
            "Take it twice daily. Then rest! Is it ok? Yes; sure.",
            ["Take it twice daily.", "Then rest!", "Is it ok?", "Yes;", "sure."],
        ),
        (
            "剂量为2.5 mg。Take 2.5 mg twice daily. 然后休息。",
            ["剂量为2.5 mg。", "Take 2.5 mg twice daily.", "然后休息。"],
        ),
        ("The dose is 1,000 mg. Version 1.2.3 is out.", ["The dose is 1,000 mg.", "Version 1.2.3 is out."]),
        (
            "Use NSAIDs, e.g. ibuprofen, for pain. Dr. Smith agrees. See i.e. the label.",
            ["Use NSAIDs, e.g. ibuprofen, for pain.", "Dr. Smith agrees.", "See i.e. the label."],
        ),
        (
            "Give 5 mg vs. 10 mg at 5 p.m. daily. Ask J. Smith. It is approx. five.",
            ["Give 5 mg vs. 10 mg at 5 p.m. daily.", "Ask J. Smith.", "It is approx. five."],
        ),
        (
            'He said "stop." Then left. 他说：“停。”然后走了。',
            ['He said "stop."', "Then left.", "他说：“停。”", "然后走了。"],
        ),
        (
            "1. Rest well.\n2. Drink water\n3. See example.com today",
            ["1. Rest well.", "2. Drink water", "3. See example.com today"],
        ),
        ("Wait... what? OK!!", ["Wait...", "what?", "OK!!"]),
        ("使用aspirin.然后休息", ["使用aspirin.", "然后休息"]),
    ],
)
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_first_chunk_may_end_at_a_comma_once_long_enough() -> None:
    en = "For most adults with a fever, the usual dose is 500 mg, every six hours. Okay."
    assert split_sentences(en, first_chunk_comma=True) == [
        "For most adults with a fever,",
        "the usual dose is 500 mg, every six hours.",
        "Okay.",
    ]
    zh = "对于大多数成年人来说，发烧时通常的剂量是五百毫克，每六小时一次。"
    assert split_sentences(zh, first_chunk_comma=True) == [
        "对于大多数成年人来说，",
        "发烧时通常的剂量是五百毫克，每六小时一次。",
    ]
    # too short to be worth speaking alone, and never inside a number
    assert split_sentences("Yes, 1,000 mg is fine.", first_chunk_comma=True) == ["Yes, 1,000 mg is fine."]
    assert split_sentences("好的，谢谢。", first_chunk_comma=True) == ["好的，谢谢。"]


def test_streaming_in_random_pieces_gives_the_same_sentences() -> None:
    rng = random.Random(7)
    text = (
        "Take 2.5 mg twice daily, e.g. at 8 a.m. and 8 p.m. Dr. Lee agrees! 每天服用2.5毫克。"
        "如果疼痛持续，请就医？1. Rest.\n2. Water. The U.S. guideline says so. Done"
    )
    whole = split_sentences(text, first_chunk_comma=True)
    for _ in range(50):
        s = SentenceSplitter(first_chunk_comma=True)
        out, i = [], 0
        while i < len(text):
            k = rng.randint(1, 5)
            out += s.feed(text[i : i + k])
            i += k
        out += s.flush()
        assert out == whole


def test_a_sentence_is_emitted_before_the_text_ends() -> None:
    s = SentenceSplitter(first_chunk_comma=False)
    assert s.feed("First sentence.") == []  # "." could still be 2.5 or e.g.: wait for the next character
    assert s.feed(" Second") == ["First sentence."]
    assert s.feed("。") == []  # a closing quote may still follow
    assert s.feed("第三") == ["Second。"]
    assert s.flush() == ["第三"]


def test_number_dot_waits_for_the_next_character() -> None:
    s = SentenceSplitter(first_chunk_comma=False)
    assert s.feed("Take 2.") == []
    assert s.feed("5 mg now. ") == []
    assert s.feed("Then") == ["Take 2.5 mg now."]


def test_run_on_text_is_cut_at_max_chars() -> None:
    text = "word, " * 100
    parts = split_sentences(text, max_chars=60)
    assert len(parts) > 5 and all(weighted_len(p) <= 60 for p in parts)
    assert " ".join(parts).split() == text.split()


def test_wide_characters_are_the_chinese_ones_plus_cjk_punctuation() -> None:
    assert weighted_len("高血压") == 6 and weighted_len("。，！？「」") == 12  # punctuation takes speech width too
    assert weighted_len("mg 5") == 3
    # a '.' or ';' before a wide character ends the sentence, Chinese character or full-width mark alike
    assert split_sentences("Take it.高血压。") == ["Take it.", "高血压。"]
    assert split_sentences("Take it;「注意」") == ["Take it;", "「注意」"]
