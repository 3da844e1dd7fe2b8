"""The FunASR protocol's pure parts: configuration checks, hotword ranking, timestamps per word and per Chinese
character, sentence stamps, appendable text, cutting long offline audio, the dedicated port's allow-list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.live import funasr as f
from app.routes.funasr import allowed


def test_a_full_funasr_configuration_is_read() -> None:
    cfg, problems = f.parse_config(
        {
            "mode": "2pass",
            "chunk_size": [5, 10, 5],
            "chunk_interval": 10,
            "encoder_chunk_look_back": 4,
            "decoder_chunk_look_back": 0,
            "wav_name": "visit-7",
            "wav_format": "pcm",
            "audio_fs": 8000,
            "is_speaking": True,
            "hotwords": json.dumps({"阿莫西林": 20, "otitis": 30, "amoxicillin": 20}, ensure_ascii=False),
            "itn": False,
            "svs_lang": "zh",
            "svs_itn": True,
        }
    )
    assert not problems
    assert (cfg.mode, cfg.wav_name, cfg.audio_fs, cfg.language, cfg.itn) == ("2pass", "visit-7", 8000, "zh", False)
    assert cfg.hotwords == ["otitis", "阿莫西林", "amoxicillin"]  # by weight; ties keep the client's order
    assert (cfg.online_label, cfg.final_label) == ("2pass-online", "2pass-offline")


def test_later_messages_change_only_what_they_name() -> None:
    first, _ = f.parse_config({"mode": "offline", "wav_name": "a", "svs_lang": "en"})
    second, _ = f.parse_config({"wav_name": "b"}, first)
    assert (second.mode, second.wav_name, second.language) == ("offline", "b", "en")
    assert first.wav_name == "a"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"mode": "streaming"}, "unknown_mode"),
        ({"audio_fs": 12345}, "unsupported_audio_fs"),
        ({"audio_fs": True}, "unsupported_audio_fs"),
        ({"svs_lang": "fr-CA"}, "unsupported_language"),
        ({"wav_format": "exe"}, "unsupported_format"),
        ({"itn": "maybe"}, "invalid_field"),
        ({"wav_name": ["x"]}, "invalid_field"),
    ],
)
def test_configurations_that_cannot_be_served_are_fatal(message: dict, code: str) -> None:
    with pytest.raises(f.ProtocolError) as info:
        f.parse_config(message)
    assert info.value.code == code and info.value.fatal and info.value.reason


@pytest.mark.parametrize(
    ("hotwords", "code"),
    [
        ("阿里巴巴 达摩院", "invalid_hotwords"),
        ('["a", "b"]', "invalid_hotwords"),
        ('{"a": "high"}', "invalid_hotwords"),
        (json.dumps({f"w{i}": 1 for i in range(3000)}), "hotwords_too_large"),
    ],
)
def test_bad_hotwords_are_reported_and_dropped_not_fatal(hotwords: str, code: str) -> None:
    cfg, problems = f.parse_config({"mode": "2pass", "hotwords": hotwords})
    assert [p.code for p in problems] == [code] and not problems[0].fatal
    assert cfg.hotwords == [] and cfg.mode == "2pass"


def test_hotwords_empty_or_as_an_object() -> None:
    assert f.parse_hotwords("") == [] and f.parse_hotwords(None) == []
    assert f.parse_hotwords({"b": 1, "a": 2.5, " ": 9}) == ["a", "b"]
    assert len(f.parse_hotwords({f"w{i}": i for i in range(300)})) == f.HOTWORDS_MAX


def test_chinese_words_are_timed_per_character_and_english_per_word() -> None:
    words = [
        {"word": "欢迎大家", "start": 0.5, "end": 1.3},
        {"word": "来体验,", "start": 1.3, "end": 1.9},
        {"word": "fever.", "start": 2.0, "end": 2.4},
    ]
    items = f.stamps(words, offset_ms=1000, limit_ms=10_000)
    assert [s.token for s in items] == ["欢", "迎", "大", "家", "来", "体", "验", "fever"]
    assert [(s.start, s.end) for s in items[:4]] == [(1500, 1700), (1700, 1900), (1900, 2100), (2100, 2300)]
    assert items[6].punc == "," and items[7].punc == "."
    assert f.timestamp_text(items[:2]) == "[[1500,1700],[1700,1900]]"
    sents = f.stamp_sents(items)
    assert [(s["text_seg"], s["punc"]) for s in sents] == [("欢 迎 大 家 来 体 验", ","), ("fever", ".")]
    assert sents[0]["start"] == 1500 and sents[0]["end"] == items[6].end and len(sents[0]["ts_list"]) == 7


def test_timestamps_never_go_back_nor_past_the_audio() -> None:
    words = [
        {"word": "a", "start": 1.0, "end": 1.5},
        {"word": "b", "start": 0.8, "end": 0.9},  # Whisper's word times can overlap
        {"word": "c", "start": 2.5, "end": 9.0},
    ]
    items = f.stamps(words, offset_ms=0, limit_ms=3000)
    starts = [s.start for s in items]
    assert starts == sorted(starts) and all(s.start <= s.end <= 3000 for s in items)


def test_text_is_appendable_as_funasr_clients_print_it() -> None:
    assert f.spaced("The patient", "has a fever") == " has a fever"
    assert f.spaced("The patient ", "has") == "has"
    assert f.spaced("欢迎", "大家") == "大家" and f.spaced("fever", ".") == "."
    assert f.spaced("", "Hello") == "Hello"
    assert f.tail_after("The patient has", "The patient has a fever.") == " a fever."
    assert f.tail_after("", "Hello there.") == "Hello there."
    assert f.tail_after("欢迎大家", "欢迎大家来体验") == "来体验"


def test_long_offline_audio_is_cut_at_its_quietest_window() -> None:
    n = 70 * 16000
    probs = [0.9] * (n // f.WINDOW + 1)
    quiet = (27 * 16000) // f.WINDOW
    probs[quiet] = 0.01
    pieces = f.plan_pieces(probs, n, max_s=30.0)
    assert pieces[0] == (0, quiet * f.WINDOW + f.WINDOW // 2)
    assert pieces[-1][1] == n and all(b - a <= 30 * 16000 for a, b in pieces)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
    assert f.plan_pieces(probs, 10 * 16000, 30.0) == [(0, 160000)]


def test_speech_needs_a_run_of_windows() -> None:
    assert not f.has_speech([0.9, 0.1] * 50, threshold=0.5, min_speech_ms=200)
    assert f.has_speech([0.1] * 10 + [0.9] * 7, threshold=0.5, min_speech_ms=200)


def test_whole_files_are_recognised_by_their_first_bytes() -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, dtype=np.int16), 16000, format="FLAC")
    assert f.sniff(buf.getvalue()) == "flac" and f.sniff(b"RIFF....WAVE") == "wav"
    assert f.sniff(b"\x00\x00\x00\x18ftypM4A ") == "mov" and f.sniff(b"hello") is None
    with pytest.raises(f.ProtocolError) as info:
        f.decode_file(b"RIFF" + b"\x00" * 100, "others", 30)
    assert info.value.code == "audio_unreadable" and not info.value.fatal


@pytest.mark.parametrize(
    ("address", "spec", "ok"),
    [
        ("127.0.0.1", "127.0.0.1/32,::1/128", True),
        ("::1", "127.0.0.1/32,::1/128", True),
        ("::ffff:127.0.0.1", "127.0.0.1/32", True),
        ("10.1.2.3", "127.0.0.1/32,::1/128", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("192.168.1.9", "10.0.0.0/8, 192.168.1.0/24", True),
        (None, "0.0.0.0/0", False),
        ("not-an-ip", "0.0.0.0/0", False),
    ],
)
def test_the_allow_list(address: str | None, spec: str, ok: bool) -> None:
    assert allowed(address, spec) is ok
