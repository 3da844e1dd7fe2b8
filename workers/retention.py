"""Audio retention: stored audio older than settings.audio_retention_days is deleted; the text records stay.

Two passes, both idempotent (any number of API processes may run them):

1. **Finished turns** (done or error) created before the cut-off: their upload (`audio_ref`), their reply
   (`reply_audio_ref`) and their speech-clip folder (audio/tts/<turn>/) go. The refs are cleared and a
   `turn.audio_purged` audit event written in the same transaction, before the files are deleted, so a
   crash in between leaves only unreferenced files, which pass 2 takes.
2. **Everything else under the audio directory** last written before the cut-off: clips of re-delivered
   stages that no reply took, pieces of a split recording whose join never ran, uploads of a request that
   died, clips of ad-hoc speech. A file an unfinished turn still refers to is kept.

One `audio.purge` audit event sums up a run that deleted anything. `medvoice purge-audio` runs it once; the
API runs it from its periodic loop every audio_retention_interval_s (one API process per interval, by a
Redis key). Logs carry counts and ids, never a path's text beyond the data directory's own names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select

from workers.core.db import session_scope
from workers.core.records import AuditEvent, Turn, TurnStatus, utcnow
from workers.core.settings import Settings

log = logging.getLogger("medvoice.retention")
FINISHED = (TurnStatus.done, TurnStatus.error)
DUE_KEY = "medvoice:retention:last-run"
BATCH = 200


@dataclass
class PurgeReport:
    cutoff: datetime | None
    turns: list[str] = field(default_factory=list)  # turns whose audio was purged
    files: int = 0
    bytes: int = 0
    stray_files: int = 0
    dry_run: bool = False
    seen: set[Path] = field(default_factory=set, repr=False)  # counted once, in a dry run too

    def as_dict(self) -> dict:
        return {
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "turns": len(self.turns),
            "files": self.files,
            "bytes": self.bytes,
            "stray_files": self.stray_files,
            "dry_run": self.dry_run,
        }


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _turn_files(settings: Settings, turn: Turn) -> list[Path]:
    root = settings.data_dir.resolve()
    paths = [(root / ref).resolve() for ref in (turn.audio_ref, turn.reply_audio_ref) if ref]
    clips = (settings.audio_dir / "tts" / turn.id).resolve()
    if clips.is_dir():
        paths.extend(p for p in clips.rglob("*") if p.is_file())
    # A ref is only ever a path under the data directory; anything else is not ours to delete.
    return [p for p in dict.fromkeys(paths) if _inside(root, p)]


def _delete(paths: list[Path], report: PurgeReport) -> None:
    for path in paths:
        if path in report.seen:
            continue
        report.seen.add(path)
        try:
            size = path.stat().st_size
            if not report.dry_run:
                path.unlink()
        except FileNotFoundError:
            continue  # another process (or an earlier run) took it
        report.files += 1
        report.bytes += size


def purge(settings: Settings, older_than_days: float | None = None, dry_run: bool = False) -> PurgeReport:
    """Delete stored audio older than `older_than_days` (default settings.audio_retention_days)."""
    days = older_than_days if older_than_days is not None else settings.audio_retention_days
    if not days:
        return PurgeReport(cutoff=None, dry_run=dry_run)
    cutoff = utcnow() - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    url = settings.resolved_database_url
    old_dirs = _old_dirs(settings.audio_dir, cutoff)  # before deleting files renews their folders' mtimes
    last_id = ""
    while True:  # pass 1, in batches: a large first purge holds no long transaction
        with session_scope(url) as db:
            turns = list(
                db.scalars(
                    select(Turn)
                    .where(
                        Turn.created_at < cutoff,
                        Turn.status.in_(FINISHED),
                        or_(Turn.audio_ref.is_not(None), Turn.reply_audio_ref.is_not(None)),
                        Turn.id > last_id,
                    )
                    .order_by(Turn.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not turns:
                break
            last_id = turns[-1].id
            doomed: list[Path] = []
            for turn in turns:
                files = _turn_files(settings, turn)
                doomed.extend(files)
                report.turns.append(turn.id)
                if dry_run:
                    continue
                db.add(
                    AuditEvent(
                        action="turn.audio_purged",
                        record_type="turn",
                        record_id=turn.id,
                        detail={
                            "consultation_id": turn.consultation_id,
                            "files": len(files),
                            "retention_days": days,
                            "had_upload": turn.audio_ref is not None,
                            "had_reply": turn.reply_audio_ref is not None,
                        },
                    )
                )
                turn.audio_ref = None
                turn.reply_audio_ref = None
            if dry_run:
                db.rollback()
        _delete(doomed, report)
    before = report.files
    _delete(_strays(settings, cutoff), report)  # pass 2
    report.stray_files = report.files - before
    if not dry_run:
        for path in old_dirs:  # deepest first; only those now empty
            with contextlib.suppress(OSError):
                path.rmdir()
    if report.files and not dry_run:
        with session_scope(url) as db:
            db.add(AuditEvent(action="audio.purge", record_type="audio", record_id=None, detail=report.as_dict()))
    if report.files or report.turns:
        log.info(
            "audio retention (%s days): %d turns, %d files (%d stray), %d bytes%s",
            days,
            len(report.turns),
            report.files,
            report.stray_files,
            report.bytes,
            " (dry run)" if dry_run else "",
        )
    return report


def _strays(settings: Settings, cutoff: datetime) -> list[Path]:
    audio = settings.audio_dir.resolve()
    if not audio.is_dir():
        return []
    root = settings.data_dir.resolve()
    with session_scope(settings.resolved_database_url) as db:
        rows = db.execute(select(Turn.audio_ref, Turn.reply_audio_ref).where(Turn.status.not_in(FINISHED))).all()
    in_use = {(root / ref).resolve() for row in rows for ref in row if ref}
    limit = cutoff.timestamp()
    out = []
    for dirpath, _dirs, names in os.walk(audio):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if st.st_mtime < limit and path.is_file() and not path.is_symlink() and path.resolve() not in in_use:
                out.append(path)
    return out


def _old_dirs(audio: Path, cutoff: datetime) -> list[Path]:
    """Folders under the audio directory not touched since the cut-off, deepest first: a folder a writer has
    just made, and is about to fill, is not among them."""
    if not audio.is_dir():
        return []
    limit = cutoff.timestamp()
    out = []
    for dirpath, _dirs, _names in os.walk(audio):
        path = Path(dirpath)
        with contextlib.suppress(OSError):
            if path != audio and path.stat().st_mtime < limit:
                out.append(path)
    return sorted(out, key=lambda p: -len(p.parts))


def purge_if_due(settings: Settings) -> PurgeReport | None:
    """From the API's periodic loop: purge when retention is on and no API process purged within
    audio_retention_interval_s. Never raises: the loop goes on when the database or Redis is away."""
    if not settings.audio_retention_days:
        return None
    try:
        from workers.core import events

        r = events.client(settings.redis_url)
        if not r.set(DUE_KEY, str(time.time()), nx=True, ex=max(1, int(settings.audio_retention_interval_s))):
            return None
        return purge(settings)
    except Exception as exc:  # noqa: BLE001 - a periodic job: report, try again next interval
        log.warning("audio retention run failed: %s", type(exc).__name__)
        return None
