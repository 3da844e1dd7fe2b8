"""wordfreq's Zipf frequencies, with its word lists held compactly.

wordfreq keeps each language's list twice once read: the list of frequency bands (a Python string per word) and
a dict of every word (~40 MB per language, English and Chinese together ~80 MB in each process that judges
terms: the rag and the llm pools both do). Here a language's list becomes two numpy arrays, a sorted 64-bit
hash of each word's UTF-8 and its band, ~3 MB, which wordfreq itself reads in place of its dict: its tokenising,
combining of several tokens and rounding stay wordfreq's own, so every Zipf value is the same
(tests/knowledge/test_frequencies.py compares every word of both lists). A hash shared by two words of a list
(not seen in wordfreq's lists) keeps wordfreq's own dict for that language.

    zipf("metformin", "en")   # 2.61
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator, Mapping
from functools import cache

import numpy as np

log = logging.getLogger("medvoice.knowledge.frequencies")
_lock = threading.Lock()
_installed: list[bool] = []


class CompactFrequencies(Mapping):
    """A word → frequency mapping over a wordfreq list of bands (band i: frequency cB_to_freq(-i))."""

    def __init__(self, bands: list[list[str]], band_frequency: list[float]) -> None:
        n = sum(len(b) for b in bands)
        keys = np.empty(n, dtype=np.int64)
        band = np.empty(n, dtype=np.uint16)
        i = 0
        for index, words in enumerate(bands):
            for word in words:
                # Hash the UTF-8, not the str: CPython hashes a str's internal buffer, so 'kp' and '火' collide.
                keys[i] = hash(word.encode())
                band[i] = index
                i += 1
        order = np.argsort(keys, kind="stable")
        self.keys, self.band = keys[order], band[order]
        self.collisions = int(np.count_nonzero(self.keys[1:] == self.keys[:-1]))
        self.band_frequency = band_frequency

    def _row(self, word: object) -> int:
        if not isinstance(word, str):
            return -1
        key = hash(word.encode())
        i = int(np.searchsorted(self.keys, key))
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def __contains__(self, word: object) -> bool:
        return self._row(word) >= 0

    def __getitem__(self, word: str) -> float:
        i = self._row(word)
        if i < 0:
            raise KeyError(word)
        return self.band_frequency[int(self.band[i])]

    def __iter__(self) -> Iterator[str]:
        raise TypeError("a compact frequency list keeps hashes, not words")

    def __len__(self) -> int:
        return len(self.keys)


def _install() -> None:
    """Point wordfreq at compact lists, built from its own data on first use of each (language, list)."""
    import wordfreq

    own = wordfreq.get_frequency_dict

    @cache
    def compact(lang: str, wordlist: str = "best", match_cutoff: None = None) -> Mapping[str, float]:
        with _lock:
            bands = wordfreq.get_frequency_list(lang, wordlist)
            table = CompactFrequencies(bands, [wordfreq.cB_to_freq(-i) for i in range(len(bands))])
            # The bands are cached by wordfreq too; what it needs from them is in the table now.
            wordfreq.get_frequency_list.cache_clear()
            del bands
            gc.collect()
        if table.collisions:
            log.warning("wordfreq %s/%s: %d hash collisions; keeping its own dict", lang, wordlist, table.collisions)
            return own(lang, wordlist)
        return table

    wordfreq.get_frequency_dict = compact


def zipf(word: str, language: str) -> float:
    """wordfreq's `zipf_frequency` (best list); 0.0 for a word it has never seen or cannot tokenise."""
    import wordfreq

    if not _installed:
        with _lock:
            if not _installed:
                _install()
                _installed.append(True)
    try:
        return float(wordfreq.zipf_frequency(word, language))
    except Exception:  # noqa: BLE001 - an unknown script or tokenizer trouble: treat as rare
        return 0.0
