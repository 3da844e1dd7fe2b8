"""`medvoice backup DIR`, `medvoice restore DIR` and `medvoice purge-audio`.

A backup is a directory:

    manifest.json          format, versions, the database's Alembic revision and row counts, every file's SHA-256
    db/medvoice.sqlite3    SQLite: a consistent copy through SQLite's online backup API (the API may keep running)
    db/medvoice.pgdump     PostgreSQL: `pg_dump --format=custom` (pg_dump must be on PATH)
    kb/...                 the knowledge-base directory (settings.kb_dir): Chroma's directory and the files beside
                           it (uploaded documents, vocabularies); its SQLite files through the online backup API

Stored audio is not part of it (MEDVOICE_AUDIO_RETENTION_DAYS deletes it anyway; copy MEDVOICE_DATA_DIR/audio
with the volume's own tools if it must be kept). `restore` checks every file's hash before it touches anything,
refuses a backup made by a newer schema, sets aside (never deletes) a database or knowledge base already in its
place only with --force, and migrates the restored database to this version's head.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from workers.core.settings import Settings, get_settings

FORMAT = "medvoice-backup"
FORMAT_VERSION = 1
TABLES = ("users", "consultations", "turns", "citations", "audit_events")
KB_LOCK = ".medvoice-kb.lock"  # knowledge/store.py holds it while a process has the embedded store open
SKIP_SUFFIXES = (".part", ".tmp", "-journal", "-wal", "-shm")  # half-written or SQLite side files


class BackupError(Exception):
    """Why a backup or restore cannot go on (shown to the operator as it is)."""


# ---- helpers -------------------------------------------------------------------------------------------------
def kb_root(settings: Settings) -> Path:
    return Path(settings.kb_dir) if settings.kb_dir else settings.data_dir / "knowledge"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _is_sqlite_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (writers may go on; WAL is taken into account)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(str(src), timeout=30)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)
        # One self-contained file: no -wal beside it to lose (a process that opens it sets its own mode).
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()
    os.replace(tmp, dst)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("medvoice", "sqlalchemy", "alembic", "chromadb"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _code_revisions() -> tuple[set[str], str | None]:
    """Every Alembic revision this version knows, and its head."""
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {s.revision for s in scripts.walk_revisions()}, scripts.get_current_head()


def _db_facts(url: str) -> tuple[str | None, dict[str, int]]:
    """The database's Alembic revision and its row counts."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            revision = (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if "alembic_version" in names
                else None
            )
            counts = {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0) for t in TABLES if t in names
            }
    finally:
        engine.dispose()
    return revision, counts


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for pg_dump/pg_restore, its password passed in the environment (not in argv,
    where any local user could read it)."""
    u = make_url(url)
    env = {**os.environ}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not on PATH: install PostgreSQL's client tools (Debian: postgresql-client, the same major "
            "version as the server) to back up or restore a PostgreSQL database"
        )
    return path


@contextlib.contextmanager
def _kb_quiet(root: Path, wait: bool) -> Any:
    """The knowledge base's process lock, when nobody holds it (yields True); else yields False, or with
    wait=False (restore) refuses: a rag worker has the embedded store open."""
    lock = root / KB_LOCK
    if not lock.exists():
        yield True
        return
    with lock.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            if not wait:
                raise BackupError(
                    f"the knowledge base at {root} is open in {holder}: stop the rag workers before restoring"
                ) from None
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---- backup --------------------------------------------------------------------------------------------------
def backup(settings: Settings, out: Path) -> dict[str, Any]:
    """Write a backup of the SQL records and the knowledge base into `out` (new or empty); its manifest."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty directory: back up into a new one")
    out.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    dialect = make_url(url).get_backend_name()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "alembic_head_of_code": _code_revisions()[1],
    }
    if dialect == "sqlite":
        src = Path(make_url(url).database or "")
        if not src.is_file():
            raise BackupError(f"no SQLite database at {src}")
        db_file = out / "db" / "medvoice.sqlite3"
        _sqlite_copy(src, db_file)
        revision, counts = _db_facts(f"sqlite:///{db_file}")  # of the copy itself: exactly what was saved
    elif dialect == "postgresql":
        db_file = out / "db" / "medvoice.pgdump"
        db_file.parent.mkdir(parents=True)
        revision, counts = _db_facts(url)
        uri, env = _libpq(url)
        done = subprocess.run(
            [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file", str(db_file), uri],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()[-500:]}")
    else:
        raise BackupError(f"backups support SQLite and PostgreSQL, not {dialect}")
    manifest["database"] = {
        "dialect": dialect,
        "file": db_file.relative_to(out).as_posix(),
        "alembic_revision": revision,
        "counts": counts,
    }
    root = kb_root(settings)
    kb: dict[str, Any] = {"included": root.is_dir(), "chroma_url": settings.kb_chroma_url}
    if root.is_dir():
        with _kb_quiet(root, wait=True) as quiet:
            # Live (a rag worker holds it): SQLite files still come through the online backup API; Chroma's
            # index files are copied as they are, and Chroma replays its log over them when it opens.
            kb["quiesced"] = quiet
            copied = 0
            for path in sorted(root.rglob("*")):
                if not path.is_file() or path.is_symlink() or path.name == KB_LOCK or path.name.endswith(SKIP_SUFFIXES):
                    continue
                dst = out / "kb" / path.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if _is_sqlite_file(path):
                    _sqlite_copy(path, dst)
                else:
                    shutil.copy2(path, dst)
                copied += 1
            kb["files"] = copied
    manifest["knowledge"] = kb
    manifest["files"] = {
        p.relative_to(out).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# ---- restore -------------------------------------------------------------------------------------------------
def read_manifest(src: Path) -> dict[str, Any]:
    path = src / "manifest.json"
    if not path.is_file():
        raise BackupError(f"{src} holds no manifest.json: not a medvoice backup")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{path} is not a medvoice backup manifest")
    if int(manifest.get("format_version") or 0) > FORMAT_VERSION:
        raise BackupError(f"backup format {manifest['format_version']} is newer than this medvoice reads")
    return manifest


def verify(src: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is there with its SHA-256, and nothing else is."""
    listed = manifest["files"]
    for rel, facts in listed.items():
        path = (src / rel).resolve()
        if src.resolve() not in path.parents:
            raise BackupError(f"the manifest names a file outside the backup: {rel}")
        if not path.is_file():
            raise BackupError(f"backup damaged: {rel} is missing")
        if sha256_of(path) != facts.get("sha256"):
            raise BackupError(f"backup damaged: {rel} does not match its SHA-256 in the manifest")
    extra = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()} - set(listed) - {"manifest.json"}
    if extra:
        raise BackupError(f"backup holds files its manifest does not list: {', '.join(sorted(extra)[:5])}")


def _set_aside(path: Path, stamp: str) -> Path | None:
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.before-restore-{stamp}")
    path.rename(aside)
    return aside


def restore(settings: Settings, src: Path, force: bool = False, migrate: bool = True) -> dict[str, Any]:
    """Restore the backup in `src` into the configured database and knowledge-base directory."""
    manifest = read_manifest(src)
    verify(src, manifest)
    db = manifest.get("database") or {}
    known, head = _code_revisions()
    revision = db.get("alembic_revision")
    if revision is not None and revision not in known:
        raise BackupError(f"the backup's schema revision {revision} is unknown here (made by a newer medvoice?)")
    url = settings.resolved_database_url
    dialect = make_url(url).get_backend_name()
    if db.get("dialect") != dialect:
        raise BackupError(f"the backup holds a {db.get('dialect')} database; the configured one is {dialect}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {"set_aside": []}
    root = kb_root(settings)
    kb = manifest.get("knowledge") or {}
    kb_files = {rel for rel in manifest["files"] if rel.startswith("kb/")}
    kb_busy = root.is_dir() and any(root.iterdir())
    # Everything is checked before anything is changed: a refused restore leaves both places as they were.
    if dialect == "sqlite":
        target = Path(make_url(url).database or "")
        if target.exists() and target.stat().st_size > 0 and not force:
            raise BackupError(f"a database already exists at {target}: restore into a fresh data dir, or --force")
    else:
        target = None
        existing, _ = _db_facts(url)
        if existing is not None and not force:
            raise BackupError("the configured PostgreSQL database already holds medvoice tables: use --force")
        _pg_tool("pg_restore")
    if kb.get("included") and kb_busy and not force:
        raise BackupError(f"a knowledge base already exists at {root}: restore into a fresh data dir, or --force")
    if root.is_dir():
        with _kb_quiet(root, wait=False):
            pass  # refuses while a rag worker holds the store
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        for side in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
            # a stale -wal beside a replaced database would be replayed into it
            if aside := _set_aside(side, stamp):
                report["set_aside"].append(str(aside))
        _sqlite_copy(src / db["file"], target)
    else:
        uri, env = _libpq(url)
        args = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", uri]
        if force:
            args[1:1] = ["--clean", "--if-exists"]
        done = subprocess.run([*args, str(src / db["file"])], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupError(f"pg_restore failed: {done.stderr.strip()[-500:]}")
    if kb.get("included"):
        tmp = root.with_name(root.name + f".restoring-{stamp}")
        tmp.mkdir(parents=True)
        for rel in sorted(kb_files):
            dst = tmp / Path(rel).relative_to("kb")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst)
        if kb_busy:
            report["set_aside"].append(str(_set_aside(root, stamp)))
        elif root.is_dir():
            root.rmdir()  # empty
        os.replace(tmp, root)  # the knowledge base appears whole, or not at all
    if migrate and revision != head:
        from app.migrate import upgrade

        upgrade(url)
        report["migrated_to"] = head
    after, counts = _db_facts(url)
    report.update({"alembic_revision": after, "counts": counts, "knowledge_files": len(kb_files)})
    return report


# ---- commands ------------------------------------------------------------------------------------------------
def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def register(cli: typer.Typer) -> None:
    @cli.command("backup")
    def backup_cmd(out: Path = typer.Argument(..., help="A new (or empty) directory for the backup.")) -> None:
        """Back up the SQL records and the knowledge base into OUT, with a manifest (versions, counts, SHA-256)."""
        try:
            manifest = backup(get_settings(), out)
        except (BackupError, OSError, sqlite3.Error) as exc:
            _fail(exc)
        db = manifest["database"]
        kb = manifest["knowledge"]
        typer.echo(
            f"backed up {db['dialect']} at revision {db['alembic_revision']} "
            f"({', '.join(f'{k} {v}' for k, v in db['counts'].items())}) and "
            + (f"{kb['files']} knowledge-base files" if kb["included"] else "no knowledge base")
            + f" into {out}"
        )
        if kb.get("included") and not kb.get("quiesced"):
            typer.echo(
                "note: a rag worker held the knowledge base, so it was copied live; for a quiesced copy stop the "
                "rag pool first",
                err=True,
            )

    @cli.command("restore")
    def restore_cmd(
        src: Path = typer.Argument(..., help="A directory written by `medvoice backup`."),
        force: bool = typer.Option(False, "--force", help="Set aside an existing database / knowledge base."),
        no_migrate: bool = typer.Option(False, "--no-migrate", help="Leave the schema at the backup's revision."),
    ) -> None:
        """Restore a backup (hashes checked first) into the configured database and knowledge base."""
        try:
            report = restore(get_settings(), src, force=force, migrate=not no_migrate)
        except (BackupError, OSError, sqlite3.Error) as exc:
            _fail(exc)
        for path in report["set_aside"]:
            typer.echo(f"set aside: {path}")
        typer.echo(
            f"restored: revision {report['alembic_revision']}, "
            f"{', '.join(f'{k} {v}' for k, v in report['counts'].items())}, "
            f"{report['knowledge_files']} knowledge-base files"
        )

    @cli.command("purge-audio")
    def purge_audio_cmd(
        older_than_days: float = typer.Option(0, help="Default: MEDVOICE_AUDIO_RETENTION_DAYS."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
    ) -> None:
        """Delete stored audio (uploads, speech clips, replies, pieces) past its retention; the text stays."""
        from workers.retention import purge

        settings = get_settings()
        days = older_than_days or settings.audio_retention_days
        if not days:
            _fail(BackupError("set MEDVOICE_AUDIO_RETENTION_DAYS or pass --older-than-days"))
        report = purge(settings, older_than_days=days, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        typer.echo(
            f"{verb} {report.files} audio files ({report.bytes} bytes; {report.stray_files} stray) older than "
            f"{days:g} days, from {len(report.turns)} turns"
        )
