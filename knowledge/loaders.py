"""Document loaders: .txt .md .pdf .html/.htm .docx and .jsonl (one document per line).

Each loader yields `Document`s with sections (heading path + text) so that chunks keep their headings
as context. A file that cannot be read raises `LoadError` with a reason a person can act on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from knowledge.text import detect_language, normalise

SUPPORTED = {".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx", ".jsonl"}
MAX_FILE_BYTES = 200 * 1024 * 1024


class LoadError(Exception):
    """A file (or a line of a .jsonl file) that cannot be loaded; str(exc) is the reason."""


@dataclass
class Section:
    heading: str  # "H1 > H2" path, "" for text before any heading
    text: str


@dataclass
class Document:
    doc_id: str
    title: str
    sections: list[Section]
    source: str = ""
    date: str = ""  # ISO date (YYYY-MM-DD) of the document itself
    tags: list[str] = field(default_factory=list)
    language: str = "en"
    path: str = ""  # where it was loaded from ("file.jsonl#12" for a line)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections if s.text)

    def content_hash(self) -> str:
        """Hash of everything a chunk is made from: re-ingesting an unchanged document changes nothing."""
        h = hashlib.sha256()
        for part in (self.title, self.source, self.date, ",".join(sorted(self.tags))):
            h.update(part.encode())
            h.update(b"\x1f")
        for s in self.sections:
            h.update(s.heading.encode())
            h.update(b"\x1e")
            h.update(s.text.encode())
            h.update(b"\x1d")
        return h.hexdigest()


@dataclass
class LoadFailure:
    path: str
    reason: str


# -- dates ------------------------------------------------------------------------------------------------


def parse_date(value: object) -> str:
    """An ISO date string (YYYY-MM-DD) from many spellings; '' when absent; LoadError when unreadable."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    s = str(value).strip()
    if s.startswith("D:"):  # PDF date: D:YYYYMMDDHHmmSS...
        digits = re.sub(r"\D", "", s[2:])
        if len(digits) >= 8:
            return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
        if len(digits) >= 4:
            return f"{digits[:4]}-01-01"
    m = re.fullmatch(r"(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?(?:[T ].*)?", s)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
        try:
            return date(y, mo, d).isoformat()
        except ValueError as exc:
            raise LoadError(f"invalid date {s!r}") from exc
    raise LoadError(f"unreadable date {s!r} (use YYYY-MM-DD)")


def _mtime_date(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).date().isoformat()


def doc_id_for_path(path: Path) -> str:
    """Stable id for a file: its slugged stem plus a short hash of its absolute path."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:48] or "doc"
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


def check_doc_id(doc_id: str) -> str:
    if not _ID_RE.match(doc_id):
        raise LoadError(f"invalid document id {doc_id!r}: letters, digits, _ . : - (at most 128)")
    return doc_id


# -- per-format readers: (title, sections, date, metadata-source) --------------------------------------------


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(f"not UTF-8 text (byte {exc.start})") from exc
    if "\x00" in text:
        raise LoadError("binary content in a text file")
    return text


def _load_txt(path: Path) -> tuple[str, list[Section], str]:
    text = normalise(_read_text(path))
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    title = lines[0] if lines and len(lines[0]) <= 120 and len(lines) > 1 else path.stem
    return title, [Section("", text)], ""


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def _sections_from_headed_lines(items: list[tuple[int, str] | str]) -> list[Section]:
    """items: (level, heading) tuples and text lines in order → sections with heading paths."""
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    buf: list[str] = []

    def flush() -> None:
        body = normalise("\n".join(buf))
        if body:
            sections.append(Section(" > ".join(h for _, h in stack), body))
        buf.clear()

    for item in items:
        if isinstance(item, tuple):
            flush()
            level, heading = item
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        else:
            buf.append(item)
    flush()
    return sections


def _load_md(path: Path) -> tuple[str, list[Section], str]:
    text = _read_text(path).replace("\r\n", "\n")
    meta_date, meta_title = "", ""
    m = _FRONT_MATTER.match(text)
    if m:
        for line in m.group(1).split("\n"):
            key, _, val = line.partition(":")
            key, val = key.strip().lower(), val.strip().strip("'\"")
            if key == "date":
                meta_date = parse_date(val)
            elif key == "title":
                meta_title = val
        text = text[m.end() :]
    items: list[tuple[int, str] | str] = []
    in_code = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        hm = None if in_code else _MD_HEADING.match(line)
        if hm:
            items.append((len(hm.group(1)), re.sub(r"[*_`]", "", hm.group(2)).strip()))
        else:
            items.append(line)
    first_h1 = next((h for it in items if isinstance(it, tuple) and it[0] == 1 for h in [it[1]]), "")
    title = meta_title or first_h1 or path.stem
    sections = _sections_from_headed_lines(items)
    # The title heading itself adds nothing as context under every chunk.
    for s in sections:
        if s.heading == first_h1:
            s.heading = ""
        elif first_h1 and s.heading.startswith(first_h1 + " > "):
            s.heading = s.heading[len(first_h1) + 3 :]
    return title, sections, meta_date


def _load_html(path: Path) -> tuple[str, list[Section], str]:
    from bs4 import BeautifulSoup

    raw = path.read_bytes()
    if not raw.strip():
        raise LoadError("empty file")
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    meta_date = ""
    for name in ("date", "dc.date", "article:published_time", "citation_date", "last-modified"):
        tag = soup.find("meta", attrs={"name": name}) or soup.find("meta", attrs={"property": name})
        if tag and tag.get("content"):
            try:
                meta_date = parse_date(tag["content"])
                break
            except LoadError:
                continue
    body = soup.body or soup
    items: list[tuple[int, str] | str] = []
    blocks = body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "blockquote", "dd", "dt"])
    seen: set[int] = set()
    for el in blocks:
        if any(id(p) in seen for p in el.parents):
            continue  # text of a nested block is already inside its parent's text
        seen.add(id(el))
        text = el.get_text(" ", strip=True)
        if not text:
            continue
        if el.name and el.name[0] == "h" and el.name[1:].isdigit():
            items.append((int(el.name[1]), text))
        else:
            items.append(("- " if el.name == "li" else "") + text)
    if not blocks:
        items.append(body.get_text("\n", strip=True))
    h1 = soup.find("h1")
    title = title or (h1.get_text(" ", strip=True) if h1 else "") or path.stem
    sections = _sections_from_headed_lines(items)
    for s in sections:
        if s.heading == title:
            s.heading = ""
        elif s.heading.startswith(title + " > "):
            s.heading = s.heading[len(title) + 3 :]
    return title, sections, meta_date


def _load_pdf(path: Path) -> tuple[str, list[Section], str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise LoadError("encrypted PDF (a password is needed)")
            except LoadError:
                raise
            except Exception as exc:
                raise LoadError(f"encrypted PDF: {exc}") from exc
        pages = [normalise(p.extract_text() or "") for p in reader.pages]
        meta = reader.metadata
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"unreadable PDF: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pypdf raises many things on broken files
        raise LoadError(f"unreadable PDF: {type(exc).__name__}: {exc}") from exc
    title, meta_date = "", ""
    if meta:
        title = (meta.title or "").strip()
        for raw in (meta.get("/CreationDate"), meta.get("/ModDate")):
            if raw:
                try:
                    meta_date = parse_date(str(raw))
                    break
                except LoadError:
                    continue
    sections = [Section(f"page {i + 1}" if len(pages) > 1 else "", t) for i, t in enumerate(pages) if t]
    if not title and sections:
        first = sections[0].text.split("\n", 1)[0].strip()
        title = first if 0 < len(first) <= 120 else path.stem
    return title or path.stem, sections, meta_date


def _load_docx(path: Path) -> tuple[str, list[Section], str]:
    import zipfile

    import docx

    try:
        d = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoadError(f"unreadable .docx: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # python-docx raises package errors of several kinds
        raise LoadError(f"unreadable .docx: {type(exc).__name__}: {exc}") from exc
    items: list[tuple[int, str] | str] = []
    title = (d.core_properties.title or "").strip()
    for p in d.paragraphs:
        text = p.text.strip()
        if not text:
            continue
        style = (p.style.name if p.style is not None else "") or ""
        if style == "Title" and not title:
            title = text
            continue
        m = re.match(r"Heading (\d)", style)
        if m:
            items.append((int(m.group(1)), text))
        else:
            items.append(text)
    for table in d.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                items.append(" | ".join(cells))
    meta_date = ""
    created = d.core_properties.created or d.core_properties.modified
    if created:
        meta_date = parse_date(created)
    sections = _sections_from_headed_lines(items)
    if not title:
        first_h = next((it[1] for it in items if isinstance(it, tuple)), "")
        title = first_h or path.stem
    return title, sections, meta_date


_READERS = {
    ".txt": _load_txt,
    ".md": _load_md,
    ".markdown": _load_md,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
}


def _finish(doc: Document) -> Document:
    if not any(s.text.strip() for s in doc.sections):
        raise LoadError("no text found")
    doc.language = detect_language(doc.title + " " + doc.text[:4000])
    return doc


def load_file(
    path: Path,
    *,
    source: str | None = None,
    date_override: str | None = None,
    tags: list[str] | None = None,
    doc_id: str | None = None,
) -> Document:
    """One document from a file (not .jsonl). Date: --date, else the file's metadata, else its mtime."""
    ext = path.suffix.lower()
    reader = _READERS.get(ext)
    if reader is None:
        raise LoadError(f"unsupported file type {ext or '(none)'}; supported: {', '.join(sorted(SUPPORTED))}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoadError(f"cannot read: {exc.strerror}") from exc
    if size == 0:
        raise LoadError("empty file")
    if size > MAX_FILE_BYTES:
        raise LoadError(f"file too large ({size} bytes > {MAX_FILE_BYTES})")
    try:
        title, sections, meta_date = reader(path)
    except LoadError:
        raise
    except OSError as exc:
        raise LoadError(f"cannot read: {exc.strerror or exc}") from exc
    doc = Document(
        doc_id=check_doc_id(doc_id) if doc_id else doc_id_for_path(path),
        title=normalise(title)[:300],
        sections=sections,
        source=source if source is not None else path.name,
        date=parse_date(date_override) if date_override else (meta_date or _mtime_date(path)),
        tags=sorted(set(tags or [])),
        path=str(path),
    )
    return _finish(doc)


def _tags(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise LoadError("tags must be a list of strings or a comma-separated string")


def iter_jsonl(
    path: Path, *, source: str | None = None, date_override: str | None = None, tags: list[str] | None = None
) -> Iterator[Document | LoadFailure]:
    """Documents from a .jsonl file, one per line: {id, title, text, source, date, tags}. A bad line is a
    LoadFailure (with its line number) and the rest still loads."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        yield LoadFailure(str(path), f"cannot read: {exc.strerror}")
        return
    with fh:
        for n, raw in enumerate(fh, start=1):
            where = f"{path}#{n}"
            if not raw.strip():
                continue
            try:
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise LoadError(f"line {n}: not UTF-8") from exc
                except json.JSONDecodeError as exc:
                    raise LoadError(f"line {n}: bad JSON ({exc.msg})") from exc
                if not isinstance(rec, dict):
                    raise LoadError(f"line {n}: not a JSON object")
                doc_id = rec.get("id") or rec.get("doc_id") or rec.get("passage_id")
                text = rec.get("text")
                if not isinstance(doc_id, str) or not doc_id:
                    raise LoadError(f"line {n}: missing 'id'")
                if not isinstance(text, str) or not text.strip():
                    raise LoadError(f"line {n}: missing 'text'")
                check_doc_id(doc_id)
                title = rec.get("title") or rec.get("focus") or ""
                heading = rec.get("heading") or rec.get("section") or ""
                tag_list = sorted(set(_tags(rec.get("tags")) + list(tags or [])))
                doc = Document(
                    doc_id=doc_id,
                    title=normalise(str(title))[:300],
                    sections=[Section(normalise(str(heading)), normalise(text))],
                    source=source if source is not None else str(rec.get("source") or path.name),
                    date=parse_date(date_override) if date_override else parse_date(rec.get("date")),
                    tags=tag_list,
                    path=where,
                )
                if not doc.date:
                    doc.date = _mtime_date(path)
                yield _finish(doc)
            except LoadError as exc:
                msg = str(exc)
                yield LoadFailure(where, msg if msg.startswith("line ") else f"line {n}: {msg}")


def discover(paths: list[Path]) -> tuple[list[Path], list[LoadFailure]]:
    """Files under the given paths (folders recursively, sorted), and those that cannot be ingested."""
    files: list[Path] = []
    failures: list[LoadFailure] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    if f.suffix.lower() in SUPPORTED:
                        files.append(f)
                    else:
                        failures.append(LoadFailure(str(f), f"unsupported file type {f.suffix or '(none)'}"))
        elif p.is_file():
            files.append(p)
        else:
            failures.append(LoadFailure(str(p), "no such file or folder"))
    return files, failures
