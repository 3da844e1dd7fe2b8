"""House rule: no transcript, answer or document text in logs at INFO — ids and timings only.

Celery's worker logs every task's return value on success at INFO ("Task x[id] succeeded in 1.2s:
{'text': ...}"), which for asr/llm tasks is the patient's words. Importing this module (the engine task
modules do, so every worker that serves them) drops the return value from that line. Celery reads
`celery.app.trace.LOG_SUCCESS` at call time, so setting it once per process suffices.
(Best moved into workers/celery_app.py, beside the app's configuration.)
"""

from __future__ import annotations

from celery.app import trace

LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
trace.LOG_SUCCESS = LOG_SUCCESS
