"""Durable file writes shared by the registry and the trainer status."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new content, never a mix.

    Writes a temporary sibling, fsyncs it, renames it over ``path`` and fsyncs the folder, so the
    new content also survives a power cut once this returns.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> int:
    """Append one line to a log and fsync it; returns the byte offset where the line starts.

    A torn last line (a crash mid-write) is closed first, so the new line starts on a fresh one.
    The caller holds the lock that serialises writers of ``path``.
    """
    return append_lines(path, [line])


def append_lines(path: Path, lines: list[str]) -> int:
    """Append lines to a log in one write and one fsync; returns the byte offset of the first.

    As ``append_line``: a torn last line is closed first, and the caller holds the writers' lock.
    """
    data = b"".join(line.rstrip("\n").encode("utf-8") + b"\n" for line in lines)
    with open(path, "ab") as f:
        offset = f.tell()
        if offset:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    data = b"\n" + data
                    offset += 1
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return offset
