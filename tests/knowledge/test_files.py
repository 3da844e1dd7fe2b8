"""Atomic writes (knowledge/files.py): the target is replaced whole, or left as it was with no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.files import atomic_path, write_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_atomic_writes_bytes_and_text_and_makes_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "a.json"
    assert write_atomic(target, '{"k": "高血压"}') == target
    assert target.read_text(encoding="utf-8") == '{"k": "高血压"}'
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == []


def test_atomic_path_replaces_the_target_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "clip.wav"
    target.write_bytes(b"old")
    with atomic_path(target, suffix=".part") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".clip.wav.") and tmp.name.endswith(".part")
        assert not tmp.exists()
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # a reader still sees the old file while the new one is written
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "vocabulary.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half a fi", encoding="utf-8")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []


def test_a_failure_before_anything_is_written_leaves_no_target(tmp_path: Path) -> None:
    target = tmp_path / "reply.wav"
    with pytest.raises(KeyboardInterrupt), atomic_path(target):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_text_that_cannot_be_encoded_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "高血压", encoding="ascii")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_two_writers_get_their_own_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block ends last and wins
    assert _leftovers(tmp_path) == []
