"""GET /v1/models and GET /v1/models/{id}: what this deployment serves, in OpenAI's object shape.

Each model is listed under our id and under every OpenAI name that means it (app/routes/openai/names.py), so a
client that looks for `whisper-1` or `gpt-4o-mini` before calling finds it. Extra fields clients ignore say
what it is: `role` (asr | tts | chat | embed), `alias_of` (our id, on an alias), `runs` (the model file or
backend that answers), and on the speech models `voices` (the tts pool's, when it lists them, and OpenAI's
names). An unknown id is a 404 `model_not_found`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool

from app.deps import AppSettings, CurrentUser
from app.routes.openai.errors import OpenAIError, OpenAIRoute
from app.routes.openai.names import OPENAI_VOICES, SERVED, ServedModel, served, underlying
from app.routes.openai.speech import pool_voices
from workers.core.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["openai-compatible"], route_class=OpenAIRoute)


def _created(settings: Settings) -> int:
    """When the deployment's models were assembled (the models directory), as OpenAI's `created` seconds."""
    try:
        return int(settings.model_root.stat().st_mtime)
    except OSError:
        return 0


def _entry(name: str, model: ServedModel, settings: Settings, voices: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": _created(settings),
        "owned_by": "medvoice",
        "role": model.role,
        "runs": underlying(model, settings),
    }
    if name != model.id:
        out["alias_of"] = model.id
    if model.role == "tts":
        out["voices"] = [*(voices or []), *({"id": v, "alias_of": "default"} for v in OPENAI_VOICES)]
    return out


@router.get("")
async def list_models(_user: CurrentUser, settings: AppSettings) -> dict[str, Any]:
    """The models this server serves (OpenAI `models.list`)."""
    voices = await run_in_threadpool(pool_voices, settings)
    data = [_entry(name, m, settings, voices) for m in SERVED for name in (m.id, *m.aliases)]
    return {"object": "list", "data": data}


@router.get("/{model_id:path}")
async def get_model(model_id: str, _user: CurrentUser, settings: AppSettings) -> dict[str, Any]:
    """One model (OpenAI `models.retrieve`); our ids and OpenAI's names alike."""
    model = served(model_id)
    if model is None:
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND, f"the model '{model_id}' does not exist here", "model_not_found", "model"
        )
    voices = await run_in_threadpool(pool_voices, settings) if model.role == "tts" else None
    return _entry(model_id, model, settings, voices)
