"""The consultation pipeline: asr → rag → llm → tts, one plain, typed function per stage.

    contracts.py  what each stage takes and gives (Transcribed, Retrieved, Answered, Spoken), as Celery carries it
    stage.py      what every stage does around its work: status, restart events, cancellation, retries,
                  failure records (one wrapper, `run`)
    asr.py · rag.py · llm.py · tts.py   the stages themselves, testable without Celery
    prefill.py    a live question's prompt evaluated before its endpoint, taken by the llm stage when it matches

workers/tasks/turns.py wraps each stage as a Celery task on its pool's queue; the API chains them by the names
below. This package's root imports nothing heavy: the API process reads STAGES from it.
"""

from __future__ import annotations

# The chain's tasks by name, in order (a typed question starts at rag.turn).
STAGES = ("asr.turn", "rag.turn", "llm.turn", "tts.turn")
