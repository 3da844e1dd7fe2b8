"""The compact word lists give every word exactly wordfreq's own Zipf value, in a fraction of the memory."""

from __future__ import annotations

from tests.conftest import fresh_interpreter

COMPARE = """
import json, random
import wordfreq

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

langs = ("en", "zh")
words = {l: list(wordfreq.iter_wordlist(l)) for l in langs}
rng = random.Random(7)
# Beyond single listed words: what wordfreq tokenises and combines (phrases, compounds, digits, unknown words).
extra = {
    "en": ["ear infection", "first-line", "500mg", "metformin", "paediatric", "zzqxv", "", "it's", "Amoxicillin"],
    "zh": ["对乙酰氨基酚", "儿童发烧", "二甲双胍", "奥司他韦", "流感", "高血压首选药物", "一日三次", "abc"],
}
for l in langs:
    extra[l] += [" ".join(rng.sample(words[l][:50000], 2)) for _ in range(300)]
    extra[l] += ["".join(rng.sample(words[l][:50000], 2)) for _ in range(300)]
own = {l: [wordfreq.zipf_frequency(w, l) for w in words[l] + extra[l]] for l in langs}
wordfreq.get_frequency_dict.cache_clear()
wordfreq.get_frequency_list.cache_clear()
wordfreq._wf_cache.clear()
import gc; gc.collect()
from knowledge import frequencies
before = rss_mb()
ours = {l: [frequencies.zipf(w, l) for w in words[l][:10]] for l in langs}
held = rss_mb() - before
wordfreq._wf_cache.clear()
ours = {l: [frequencies.zipf(w, l) for w in words[l] + extra[l]] for l in langs}
tables = {l: type(wordfreq.get_frequency_dict(l, "best")).__name__ for l in langs}
print(json.dumps({"same": {l: own[l] == ours[l] for l in langs}, "n": {l: len(own[l]) for l in langs},
                  "held_mb": held, "tables": tables,
                  "diff": {l: [(w, a, b) for w, a, b in zip(words[l] + extra[l], own[l], ours[l]) if a != b][:5]
                           for l in langs}}))
"""


def test_every_zipf_value_is_wordfreqs_own_from_compact_lists() -> None:
    out = fresh_interpreter(COMPARE)
    assert out["tables"] == {"en": "CompactFrequencies", "zh": "CompactFrequencies"}, out
    assert out["same"] == {"en": True, "zh": True}, out["diff"]
    assert out["n"]["en"] > 300_000 and out["n"]["zh"] > 300_000
    # wordfreq's own dicts of both lists hold ~80 MB; the compact ones a few (plus wordfreq's Chinese tokenizer).
    assert out["held_mb"] < 30, out["held_mb"]
