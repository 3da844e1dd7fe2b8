"""The BM25 index leaves numba out of the process (bm25s would import it, and LLVM, for a backend we never call)
and scores the same either way; a process that imports numba afterwards still gets it."""

from __future__ import annotations

from tests.conftest import fresh_interpreter

BUILD = """
import json, sys
{before}
from knowledge.lexical import LexicalIndex
idx = LexicalIndex.build(
    ["a", "b", "c"],
    ["paracetamol dose for a child with fever", "amoxicillin for otitis media", "流感 奥司他韦 治疗"],
    ["s", "s", "s"], [[], [], []],
)
scores, upper = idx.scores("paracetamol fever dose")
zh, _ = idx.scores("奥司他韦")
out = {{"scores": [round(float(x), 6) for x in scores], "zh": [round(float(x), 6) for x in zh], "upper": upper,
        "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}}
import numba  # the hiding is undone: numba itself still imports
out["numba_after"] = "numba" in sys.modules
print(json.dumps(out))
"""


def test_the_bm25_index_builds_and_scores_without_numba() -> None:
    alone = fresh_interpreter(BUILD.format(before=""))
    assert alone["numba"] is False and alone["llvmlite"] is False and alone["numba_after"] is True
    assert alone["scores"][0] > 0 and alone["scores"][1:] == [0.0, 0.0] and alone["upper"] >= alone["scores"][0] - 1e-5
    assert alone["zh"][2] > 0
    # Where numba was already imported, bm25s gets it, and every score is the same.
    with_numba = fresh_interpreter(BUILD.format(before="import numba"))
    assert with_numba["numba"] is True
    assert (with_numba["scores"], with_numba["zh"], with_numba["upper"]) == (
        alone["scores"],
        alone["zh"],
        alone["upper"],
    )
