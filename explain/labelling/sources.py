"""Where the images to label are: a folder tree (any depth), a text file of paths, or a CSV with a `path` column.

Relative entries of a list are read from the list's folder, `../` included
(the list is its owner's). One file is labelled once, however it is
spelled: two entries that reach the same file (`a.jpg` and `./a.jpg`, a
link and its target, two hard links) keep the first spelling only. Entries
are not opened here: one that is not a regular file (a FIFO, a device)
becomes an error row when it is labelled, never a wait.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from explain.datasets import IMAGE_SUFFIXES
from explain.errors import ExplainError


def read_sources(data: str | Path) -> list[str]:
    """Image paths, sorted for folders, in file order for lists; relative paths are read from the list's folder."""
    data = Path(data)
    if data.is_dir():
        paths = sorted(str(p) for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif data.is_file():
        try:
            text = data.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise ExplainError(f"{data}: cannot read the list of images ({error.__class__.__name__})") from None
        if data.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows or "path" not in rows[0]:
                raise ExplainError(f"{data}: a CSV of images needs a 'path' column")
            entries = [row["path"].strip() for row in rows if (row.get("path") or "").strip()]
        else:
            entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        paths = [entry if Path(entry).is_absolute() else str(data.parent / entry) for entry in entries]
    else:
        raise ExplainError(f"{data}: no such folder or list of images")
    if not paths:
        raise ExplainError(f"{data}: no images found")
    return _one_spelling_each(paths)


def _one_spelling_each(paths: list[str]) -> list[str]:
    """The paths in order, without a later one that names a file already listed."""
    kept, seen = [], set()
    for path in paths:
        try:
            info = os.stat(path)
            identity: tuple = ("file", info.st_dev, info.st_ino)
        except OSError:  # missing or unreadable: an error row later, known by its normalised spelling
            identity = ("path", os.path.normpath(os.path.abspath(path)))
        if identity not in seen:
            seen.add(identity)
            kept.append(path)
    return kept
