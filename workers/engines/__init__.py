"""Engine registry: each model engine loads once per worker process, at `worker_process_init`.

An engine module registers a loader for its pool; importing it must not import the model library
(loaders import it lazily). A prefork worker's parent never loads a model: only its children do,
and only for the pools this worker serves (MEDVOICE_WORKER_POOLS, set by `medvoice worker`).

The engine modules themselves are imported here, on demand (MODULES), not by the task modules: a worker's
parent imports every task module and forks its children from that state, so what it imports is resident in
the parent and again in each child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

from workers.core.settings import Settings, get_settings

log = logging.getLogger("medvoice.engines")

Loader = Callable[[Settings], Any]
# Engine name -> the module that registers its loader, in loading order (rag before embed: embed shares the
# rag engine's embedder when that is loaded), with the pool it serves.
MODULES: dict[str, tuple[str, str]] = {
    "rag": ("rag", "workers.engines.rag"),
    "asr": ("asr", "workers.engines.asr"),
    "embed": ("rag", "workers.engines.embed"),
    "llm": ("llm", "workers.engines.llm"),
    "tts": ("tts", "workers.engines.tts"),
}
_loaders: dict[str, tuple[str, Loader]] = {}  # engine name -> (pool, loader)
_engines: dict[str, Any] = {}
_load_seconds: dict[str, float] = {}
_lock = threading.RLock()  # a loader may get() another engine


def register(name: str, pool: str) -> Callable[[Loader], Loader]:
    def deco(loader: Loader) -> Loader:
        _loaders[name] = (pool, loader)
        return loader

    return deco


def get(name: str) -> Any:
    """The process's engine, loading it on first use (in-process callers such as the CLI or a bench)."""
    engine = _engines.get(name)
    if engine is None:
        with _lock:
            engine = _engines.get(name)
            if engine is None:
                if name not in _loaders and name in MODULES:
                    import_module(MODULES[name][1])
                _, loader = _loaders[name]
                t0 = time.perf_counter()
                engine = loader(get_settings())
                _load_seconds[name] = time.perf_counter() - t0
                _engines[name] = engine
                log.info("engine %s loaded in %.2fs (pid %d)", name, _load_seconds[name], os.getpid())
    return engine


def loaded() -> dict[str, float]:
    return dict(_load_seconds)


def served_pools() -> list[str]:
    raw = os.environ.get("MEDVOICE_WORKER_POOLS", "")
    return [p for p in raw.split(",") if p]


# A pool that runs another pool's engine: the live pool transcribes with the asr pool's Whisper.
SHARES = {"live": "asr"}


def load_for_pools(pools: list[str]) -> None:
    wanted = {*pools, *(SHARES[p] for p in pools if p in SHARES)}
    for name, (pool, _module) in MODULES.items():
        if pool in wanted:
            get(name)


def reset() -> None:
    """Forget loaded engines (tests that reload with other settings)."""
    with _lock:
        _engines.clear()
        _load_seconds.clear()
