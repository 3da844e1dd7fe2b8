"""What the consultation test modules share: the knowledge page they ingest and the workers' environment."""

from __future__ import annotations

from workers.core.settings import Settings

KB_DOC = """---
title: Otitis media in adults
date: 2025-01-10
---
# Otitis media in adults

Acute otitis media, a middle ear infection, is treated in adults with amoxicillin 500 mg three times daily
for 5 to 7 days.
Patients allergic to penicillin receive azithromycin 500 mg once daily for 3 days instead.
Paracetamol 1 g every 6 hours relieves ear pain; do not exceed 4 g per day.
"""


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        "MEDVOICE_DATABASE_URL": settings.resolved_database_url,
        "MEDVOICE_DATA_DIR": str(settings.data_dir),
        "MEDVOICE_KB_DIR": str(settings.kb_dir),
        "MEDVOICE_KB_REFRESH_INTERVAL_S": "0",
        "MEDVOICE_LLM_N_CTX": "2048",
        "MEDVOICE_CONSULT_MAX_TOKENS": "64",
        "MEDVOICE_CONSULT_STAGE_RETRIES": "2",
    }
