"""knowledge/text.py: the one CJK class, the one language detector, sentences and clauses of passages."""

from __future__ import annotations

import re

from knowledge.text import CJK, CJK_CHAR, CJK_RUN, cjk_ratio, detect_language, is_cjk, split_clauses, split_sentences


def test_the_cjk_class_covers_the_ideograph_blocks_and_nothing_else():
    for ch in ("高", "㐀", "䶵", "鿿", "豈"):  # unified, Extension A (both ends), end of the unified block, compat
        assert is_cjk(ch) and CJK_CHAR.match(ch)
    for ch in ("a", "1", "。", "，", "！", " ", "é", "ア", "한"):  # punctuation and other scripts are not
        assert not is_cjk(ch)
    assert re.findall(rf"[{CJK}]+", "Take 布洛芬 400 mg，每日3次") == ["布洛芬", "每日", "次"]
    assert CJK_RUN.findall("Take 布洛芬 400 mg，每日3次") == ["布洛芬", "每日", "次"]


def test_detect_language_is_chinese_from_a_fifth_of_the_letters():
    assert detect_language("糖尿病的症状有哪些") == "zh" and detect_language("gout") == "en"
    assert detect_language("") == "en" and detect_language("400 mg?") == "en"
    assert cjk_ratio("ibuprofen 布洛芬") == 3 / 12
    assert detect_language("ibuprofen 布洛芬") == "zh"  # 0.25: a Chinese question naming an English drug
    assert detect_language("paracetamol acetaminophen 药") == "en"


def test_split_clauses_cuts_the_sentences_again_at_semicolons():
    text = (
        "Target below 140/90 mmHg; below 150/90 mmHg in patients aged 80 or over. Review yearly.\n\n"
        "成人每次500毫克；儿童按体重给药。e.g. this stays whole;no space either"
    )
    assert split_clauses(text) == [
        "Target below 140/90 mmHg;",
        "below 150/90 mmHg in patients aged 80 or over.",
        "Review yearly.",
        "成人每次500毫克；",
        "儿童按体重给药。",
        "e.g. this stays whole;",
        "no space either",
    ]
    assert split_sentences("A; b. C.") == ["A; b.", "C."]
    assert split_clauses("") == []
