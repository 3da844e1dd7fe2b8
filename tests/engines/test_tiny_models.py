"""The real llama_cpp.Llama and Coqui TTS loading paths, driven by tiny random-weight models the suite writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tiny_models import write_tiny_gguf, write_tiny_vits
from workers.core.errors import EmptyInput, InputTooLarge, ModelHashMismatch
from workers.core.settings import Settings

pytest.importorskip("llama_cpp", reason="llama-cpp-python is in the engines extra")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir: Path) -> Path:
    return write_tiny_gguf(tiny_dir / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_vits(tiny_dir: Path) -> tuple[Path, Path]:
    pytest.importorskip("TTS", reason="coqui-tts is in the engines extra")
    return write_tiny_vits(tiny_dir / "vits")


@pytest.fixture(scope="module")
def llm_engine(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    from workers.engines.llm import load

    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    s = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        llm_model_path=tiny_gguf,
        llm_model_sha256=sha,
        llm_n_ctx=1024,
        llm_threads=1,
        llm_temperature=0.8,
    )
    return load(s)  # the registered loader: verify the hash, then llama_cpp.Llama(model_path=...)


def test_llm_loads_with_its_gguf_chat_template_and_evaluates_the_prefix_once(llm_engine) -> None:
    assert llm_engine.template_source == "gguf"
    assert len(llm_engine.prefix_tokens) > 10 and llm_engine._prefix_state is not None
    msgs = [{"role": "system", "content": llm_engine.settings.llm_system_prompt}, {"role": "user", "content": "hi"}]
    assert llm_engine.tokens_for(msgs)[: len(llm_engine.prefix_tokens)] == llm_engine.prefix_tokens


def test_llm_streams_sentences_within_max_tokens(llm_engine) -> None:
    from workers.engines.llm import build_messages

    seen: list[tuple[int, str]] = []
    msgs = build_messages(llm_engine.settings.llm_system_prompt, "What is aspirin?", ["Aspirin is a drug."])
    r = llm_engine.generate(msgs, max_tokens=40, on_sentence=lambda i, t: seen.append((i, t)))
    assert 1 <= r["timings"]["tokens"] <= 40
    assert r["timings"]["first_token_s"] is not None and r["timings"]["total_s"] > 0
    assert seen == list(enumerate(r["sentences"]))
    assert "".join(r["sentences"]).replace(" ", "") == r["text"].replace(" ", "")
    assert r["cancelled"] is False


def test_llm_cancel_stops_between_tokens(llm_engine) -> None:
    from workers.engines.llm import build_messages

    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    r = llm_engine.generate(build_messages("sys", "Tell me everything."), max_tokens=200, cancel=cancel)
    assert r["cancelled"] is True and r["finish_reason"] == "cancelled"
    assert r["timings"]["tokens"] == 5
    r2 = llm_engine.generate(build_messages("sys", "again"), max_tokens=50, cancel=lambda: True)
    assert r2["cancelled"] and r2["timings"]["tokens"] == 0 and r2["text"] == ""


def test_llm_prefix_state_is_restored_after_another_prompt(llm_engine) -> None:
    from workers.engines.llm import build_messages

    other = llm_engine.generate([{"role": "user", "content": "no system prompt here"}], max_tokens=5)
    assert other["timings"]["prefix_restored"] is False
    r = llm_engine.generate(build_messages(llm_engine.settings.llm_system_prompt, "and now?"), max_tokens=5)
    assert r["timings"]["prefix_restored"] is True
    again = llm_engine.generate(build_messages(llm_engine.settings.llm_system_prompt, "once more"), max_tokens=5)
    assert again["timings"]["prefix_restored"] is False  # the KV cache already starts with it


def test_llm_refuses_a_prompt_larger_than_its_context(llm_engine) -> None:
    with pytest.raises(InputTooLarge):
        llm_engine.generate([{"role": "user", "content": "x" * 3000}], max_tokens=5)


def test_llm_refuses_a_gguf_whose_hash_differs(tiny_gguf: Path, tmp_path: Path) -> None:
    from workers.engines.llm import load

    with pytest.raises(ModelHashMismatch):
        load(Settings(data_dir=tmp_path, llm_model_path=tiny_gguf, llm_model_sha256="ab" * 32))


def _coqui(tiny_vits: tuple[Path, Path], data_dir: Path, **overrides: object):
    from workers.engines.tts import load

    model, config = tiny_vits
    return load(
        Settings(
            data_dir=data_dir,
            tts_backend="coqui",
            tts_model_path=model,
            tts_config_path=config,
            tts_threads=1,
            tts_output_rate=16000,  # the tiny VITS's own rate: its exact sample counts are checked
            **overrides,
        )
    )  # TTS(model_path=..., config_path=...)


@pytest.fixture(scope="module")
def coqui_engine(tiny_vits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    return _coqui(tiny_vits, tmp_path_factory.mktemp("data"))


def test_coqui_voice_variation_follows_the_noise_settings(tiny_vits: tuple[Path, Path], tmp_path: Path) -> None:
    text = "Take two tablets every six hours."
    steady = _coqui(tiny_vits, tmp_path, tts_noise_scale=0.0, tts_noise_w_scale=0.0)
    assert np.array_equal(steady.synthesize(text)[0], steady.synthesize(text)[0])
    lively = _coqui(tiny_vits, tmp_path, tts_noise_scale=0.667, tts_noise_w_scale=0.8)
    assert not np.array_equal(lively.synthesize(text)[0], lively.synthesize(text)[0])


def test_coqui_loads_from_local_files_and_writes_pcm16(coqui_engine, tmp_path: Path) -> None:
    assert coqui_engine.name == "coqui" and coqui_engine.sample_rate == 16000
    assert type(coqui_engine.backend.tts).__module__ == "TTS.api"
    text = "Take two tablets every six hours."
    wav, timings = coqui_engine.synthesize(text)
    assert wav.dtype == np.float32 and wav.size > 0 and np.isfinite(wav).all()
    assert timings["audio_s"] == pytest.approx(wav.size / 16000, abs=1e-3)
    # 67 symbols (with blanks) x 3 frames x 128 samples / 1.3 speed + Coqui's 10,000-sample pad
    assert 1.0 < timings["audio_s"] < 3.0
    out = tmp_path / "clip.wav"
    coqui_engine.write_wav(wav, out)
    info = sf.info(str(out))
    assert info.subtype == "PCM_16" and info.samplerate == 16000 and info.channels == 1
    assert info.frames == wav.size


def test_coqui_speed_changes_duration(coqui_engine) -> None:
    text = "Take two tablets every six hours."
    slow, _ = coqui_engine.synthesize(text, speed=0.5)
    normal, _ = coqui_engine.synthesize(text, speed=1.0)
    assert slow.size > normal.size * 1.5


def test_tts_rejects_text_with_nothing_to_speak(coqui_engine) -> None:
    with pytest.raises(EmptyInput):
        coqui_engine.synthesize(" ** [1] -- ")
