"""The embeddings engine on its own (no rag engine in the process): loads through knowledge.embedders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_embed_engine_loads_alone_and_returns_normalized_batches() -> None:
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is in the engines extra")
    code = (
        "import json, numpy as np\n"
        "from workers import engines\n"
        "from workers.engines import embed\n"
        "e = engines.get('embed')\n"
        "v, _ = e.embed(['Aspirin reduces fever.'] * 40 + ['Insulin lowers blood glucose.'], batch_size=16)\n"
        "q, _ = e.embed(['what lowers blood sugar?'], kind='query')\n"
        "print(json.dumps({'shared': e.shared, 'shape': list(v.shape), 'norms': np.linalg.norm(v, axis=1).tolist(),\n"
        "                  'sims': (v[[0, -1]] @ q[0]).tolist(), 'dtype': str(v.dtype)}))\n"
    )
    # A subprocess with a timeout: a loader that waits on the registry's lock must fail, not hang the suite.
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["shared"] is False and r["shape"] == [41, 384] and r["dtype"] == "float32"
    assert all(abs(n - 1.0) < 1e-4 for n in r["norms"])
    assert r["sims"][1] > r["sims"][0]
