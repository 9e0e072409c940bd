"""Where the images to label are: a folder tree (any depth), a text file of paths, or a CSV with a `path` column."""

from __future__ import annotations

import csv
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
    return list(dict.fromkeys(paths))
