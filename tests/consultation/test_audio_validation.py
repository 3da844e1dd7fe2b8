"""app/audio.py: what the API accepts as a consultation recording, decoded with PyAV in the API process."""

from __future__ import annotations

import pytest

from app.audio import UnsupportedAudioFormat, allowed_extensions, validate_audio
from tests.consultation.audio_fixtures import bad_uploads, tone
from workers.core.errors import InputTooLarge
from workers.core.settings import Settings

SETTINGS = Settings(consult_max_audio_s=3.0, consult_max_audio_bytes=400_000)


@pytest.mark.parametrize(
    ("name", "fmt", "subtype", "codec"),
    [
        ("q.wav", "WAV", None, "pcm_s16le"),
        ("q.flac", "FLAC", None, "flac"),
        ("q.ogg", "OGG", "VORBIS", "vorbis"),
        ("q.opus", "OGG", "OPUS", "opus"),
        ("Q.MP3", "MP3", None, "mp3"),
    ],
)
def test_accepts_real_audio_in_each_container(name, fmt, subtype, codec):
    rate = 48000 if subtype == "OPUS" else 16000
    info = validate_audio(tone(1.0, rate=rate, fmt=fmt, subtype=subtype), name, SETTINGS)
    assert info.codec.startswith(codec)
    assert info.sample_rate == rate and info.channels == 1
    assert 0.95 <= info.duration_s <= 1.05


@pytest.mark.parametrize("case", list(bad_uploads(SETTINGS.consult_max_audio_s)))
def test_refuses_bad_uploads_with_a_typed_4xx(case):
    filename, data, status, code = bad_uploads(SETTINGS.consult_max_audio_s)[case]
    with pytest.raises(Exception) as info:
        validate_audio(data, filename, SETTINGS)
    assert info.value.http_status == status, info.value
    assert info.value.code == code
    assert str(info.value)  # a reason a person can read


def test_size_limit_is_checked_before_decoding():
    with pytest.raises(InputTooLarge):
        validate_audio(b"RIFF" + b"\0" * SETTINGS.consult_max_audio_bytes, "q.wav", SETTINGS)


def test_extension_list_comes_from_settings():
    narrow = Settings(consult_audio_formats="wav, .FLAC, exe")
    assert allowed_extensions(narrow) == ["wav", "flac"]  # unknown entries have no demuxer and are ignored
    with pytest.raises(UnsupportedAudioFormat):
        validate_audio(tone(1.0, fmt="OGG", subtype="VORBIS"), "q.ogg", narrow)
