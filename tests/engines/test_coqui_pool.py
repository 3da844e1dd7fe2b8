"""Integration: the Coqui backend serving tts.synthesize in a real tts pool (tiny random-weight VITS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tiny_models import write_tiny_vits
from workers.core.settings import Settings


def test_coqui_pool_returns_audio_of_plausible_length(start_worker, tmp_path: Path) -> None:
    pytest.importorskip("TTS", reason="coqui-tts is in the engines extra")
    from workers.celery_app import celery_app

    model, config = write_tiny_vits(tmp_path / "vits")
    start_worker(
        "tts",
        timeout_s=120,
        MEDVOICE_TTS_BACKEND="coqui",
        MEDVOICE_TTS_MODEL_PATH=str(model),
        MEDVOICE_TTS_CONFIG_PATH=str(config),
        MEDVOICE_TTS_OUTPUT_RATE="16000",  # the tiny VITS's own rate: its exact sample counts are checked
    )
    text = "Take two tablets every six hours."
    out = celery_app.send_task("tts.synthesize", args=[text], kwargs={"speed": 1.0}).get(timeout=300)
    assert out["backend"] == "coqui" and out["sample_rate"] == 16000
    path = Settings().data_dir / out["audio_ref"]
    audio, sr = sf.read(str(path), dtype="int16")
    assert sf.info(str(path)).subtype == "PCM_16" and sr == 16000
    # 67 symbols (characters + blanks) x 3 frames x 128 samples, plus Coqui's 10,000-sample pad
    assert audio.size == 67 * 3 * 128 + 10_000
    assert abs(audio).max() > 0
    # speed 2: 1.5 -> 2 frames a symbol (the tiny model's durations are whole frames)
    faster = celery_app.send_task("tts.synthesize", args=[text], kwargs={"speed": 2.0}).get(timeout=300)
    assert faster["duration_s"] == pytest.approx((67 * 2 * 128 + 10_000) / 16000, abs=1e-3)


def test_a_missing_model_file_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    """The engine cannot load: the pool never reports ready, still answers, and each task fails with
    ModelFileMissing (503) naming the file."""
    import os

    from tests.conftest import WorkerProcess, wait_for
    from workers.celery_app import celery_app
    from workers.core import errors

    missing = tmp_path / "no-such-voice" / "model.pth"
    env = {**os.environ, "MEDVOICE_TTS_BACKEND": "coqui", "MEDVOICE_TTS_MODEL_PATH": str(missing)}
    w = WorkerProcess("tts", env, tmp_path / "worker-tts.log")
    try:
        wait_for(
            lambda: any(w.name in r for r in celery_app.control.ping(destination=[w.name], timeout=0.5)), 120, "worker"
        )
        for _ in range(2):
            with pytest.raises(errors.ModelFileMissing, match="no-such-voice") as info:
                celery_app.send_task("tts.synthesize", args=["Hello there."]).get(timeout=120)
            assert info.value.http_status == 503
        assert celery_app.send_task("tts.ping").get(timeout=60)["pool"] == "tts"
        assert w.proc.poll() is None
    finally:
        w.stop()
