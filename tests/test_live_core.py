"""The live streaming core without a server: the per-session VAD endpointer on real speech (espeak-ng), its
hysteresis, pre-roll, length cut and continuation, and the LocalAgreement-2 partial transcripts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from app.live.agreement import LocalAgreement
from app.live.vad import KEEP_SILENCE_MS, RATE, WINDOW, Endpointer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test speech")


def speech(text: str, tmp_path: Path) -> np.ndarray:
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    samples, rate = sf.read(str(wav), dtype="int16")
    return soxr.resample(samples, rate, RATE).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def run(endpointer: Endpointer, audio: np.ndarray, frame: int = 960) -> list:
    events = []
    for i in range(0, audio.shape[0], frame):
        events.extend(endpointer.feed(audio[i : i + frame]))
    return events


def test_speech_between_silences_is_one_utterance_with_its_pre_roll(tmp_path: Path) -> None:
    voice = speech("What is the dose of amoxicillin for a child with otitis media?", tmp_path)
    ep = Endpointer(silence_ms=500, prefix_ms=300)
    events = run(ep, np.concatenate([quiet(1.0), voice, quiet(1.0)]))
    assert [e.kind for e in events] == ["started", "stopped"]
    started, stopped = events
    assert 900 <= started.at_ms <= 1300
    assert stopped.audio is not None and stopped.reason == "silence"
    # Pre-roll before the start, the voiced audio, and KEEP_SILENCE_MS of trailing silence at most.
    voiced_s = voice.shape[0] / RATE
    assert voiced_s - 0.5 < stopped.audio.shape[0] / RATE < voiced_s + 0.3 + KEEP_SILENCE_MS / 1000 + 0.1
    assert stopped.start_ms is not None and stopped.start_ms < started.at_ms


def test_a_click_is_not_speech(tmp_path: Path) -> None:
    click = np.concatenate(
        [quiet(0.5), (np.random.default_rng(0).normal(0, 8000, int(RATE * 0.05))).astype(np.int16), quiet(1.0)]
    )
    assert run(Endpointer(min_speech_ms=200), click) == []


def test_long_speech_is_cut_at_the_longest_utterance(tmp_path: Path) -> None:
    voice = speech("one two three four five six seven eight nine ten eleven twelve thirteen fourteen", tmp_path)
    ep = Endpointer(max_utterance_s=1.5, silence_ms=800)
    events = run(ep, np.concatenate([quiet(0.5), voice, quiet(1.2)]))
    stops = [e for e in events if e.kind == "stopped"]
    assert len(stops) >= 2 and stops[0].reason == "max_length"
    assert all(e.audio.shape[0] / RATE <= 1.5 + WINDOW / RATE for e in stops if e.reason == "max_length")


def test_the_audio_kept_at_the_endpoint_is_the_audio_heard_at_the_first_pause(tmp_path: Path) -> None:
    """What the speculative final transcript is made of (at KEEP_SILENCE_MS of silence) is exactly what the
    endpoint hands over, so a transcript made then is the transcript of the utterance."""
    voice = speech("Is amoxicillin safe in pregnancy?", tmp_path)
    ep = Endpointer(silence_ms=500)
    at_pause = None
    out = []
    audio = np.concatenate([quiet(0.5), voice, quiet(1.0)])
    for i in range(0, audio.shape[0], 512):
        out.extend(ep.feed(audio[i : i + 512]))
        if at_pause is None and ep.speaking and ep.silent_ms >= KEEP_SILENCE_MS:
            at_pause = (ep.current().copy(), ep.last_voice_ms)
    stopped = next(e for e in out if e.kind == "stopped")
    assert at_pause is not None and at_pause[1] == stopped.at_ms
    assert np.array_equal(at_pause[0], stopped.audio)


def test_speech_resuming_soon_continues_the_previous_utterance(tmp_path: Path) -> None:
    first, second = speech("How should an adult be treated", tmp_path), speech("and for how long?", tmp_path)
    ep = Endpointer(silence_ms=500)
    run(ep, np.concatenate([quiet(0.3), first, quiet(0.8)]))
    events = run(ep, second[: RATE // 2])
    assert [e.kind for e in events] == ["started"]
    assert ep.join_previous(1500)
    events = run(ep, np.concatenate([second[RATE // 2 :], quiet(1.0)]))
    whole = next(e for e in events if e.kind == "stopped").audio
    assert whole.shape[0] / RATE > (first.shape[0] + second.shape[0]) / RATE - 0.6
    assert not ep.join_previous(1500)  # nothing left to join


def test_local_agreement_releases_only_what_two_hypotheses_share() -> None:
    a = LocalAgreement()
    assert a.update("What is") == ""
    assert a.update("What is the dose") == "What is"
    assert a.update("What is the dose of amoxicillin.") == " the dose"
    assert a.update("What is the dosage of amoxicillin") == ""  # disagrees with what was released: nothing new
    assert a.update("What is the dose of amoxicillin for") == ""
    assert a.update("What is the dose of amoxicillin for a child") == " of amoxicillin for"
    assert a.text == "What is the dose of amoxicillin for"
    zh = LocalAgreement()
    assert zh.update("成人急性") == ""
    assert zh.update("成人急性中耳炎") == "成人急性"
    assert zh.update("成人急性中耳炎的一线") == "中耳炎"
