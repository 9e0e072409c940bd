"""Image collections on disk, and their embeddings: what evaluation and labelling both read.

A `Dataset` is image paths with their labels, from an ImageFolder tree or a
CSV of path,label (`load_dataset`). `embed_files` turns image files into
unit-norm embeddings: a DataLoader decodes and preprocesses in worker
processes while the model runs, the disk cache is keyed by the file's
bytes, and an unreadable file is reported by index, never fatal. No class
matching, scoring or metrics here: those are `evaluate`'s.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError, ImageError, first_line
from explain.images import check_regular_file, open_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Image paths with their labels; `classes` in a fixed order (folder or first-seen order)."""

    paths: list[Path]
    labels: list[str]
    classes: list[str]

    @property
    def targets(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def subset(self, keep: Sequence[int]) -> Dataset:
        return Dataset([self.paths[i] for i in keep], [self.labels[i] for i in keep], self.classes)


def load_dataset(data: str | Path, limit: int | None = None, seed: int = 0, root: str | Path | None = None) -> Dataset:
    """An ImageFolder tree (DATA/<class>/<image>) or a CSV of path,label; `limit` samples at random.

    With `root`, nothing outside it is read: class folders and files that are
    (or pass through) symbolic links resolving outside `root` are skipped.
    """
    data = Path(data)
    inside = (
        (lambda path: path.resolve().is_relative_to(Path(root).resolve())) if root is not None else (lambda path: True)
    )
    if data.is_dir():
        folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".") and inside(p))
        paths, labels = [], []
        for folder in folders:
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and inside(path):
                    paths.append(path)
                    labels.append(folder.name)
        classes = [folder.name for folder in folders]
    elif data.is_file():
        paths, labels = _read_csv(data)
        classes = list(dict.fromkeys(labels))
    else:
        raise ExplainError(f"{data}: no such dataset folder or CSV file")
    if not paths:
        raise ExplainError(f"{data}: no images found (expected DATA/<class>/<image> or a CSV of path,label)")
    dataset = Dataset(paths, labels, classes)
    if limit is not None and limit < len(paths):
        chosen = sorted(random.Random(seed).sample(range(len(paths)), limit))
        dataset = dataset.subset(chosen)
    return dataset


def _read_csv(path: Path) -> tuple[list[Path], list[str]]:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise ExplainError(f"{path}: cannot read the CSV ({error.__class__.__name__})") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    paths, labels = [], []
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ExplainError(f"{path}: row {number} is not 'path,label'")
        image = Path(row[0].strip())
        paths.append(image if image.is_absolute() else path.parent / image)
        labels.append(row[1].strip())
    return paths, labels


class _Files(torch.utils.data.Dataset):
    """Decodes and preprocesses one file per item, in DataLoader workers; failures come back as text."""

    def __init__(self, paths: Sequence[Path], image_processor: Callable):
        # Only the image processor travels to the workers, never the model.
        self.paths, self.image_processor = list(paths), image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            pixels = self.image_processor(images=[open_image(self.paths[index])], return_tensors="pt")
            return index, {k: v[0] for k, v in pixels.items()}, None
        except ExplainError as error:
            return index, None, str(error)
        except Exception as error:  # a worker must never take the whole run down
            return index, None, f"{self.paths[index]}: {first_line(error)}"


def _collate(items):
    good = [(i, pixels) for i, pixels, error in items if pixels is not None]
    failed = [(i, error) for i, _, error in items if error is not None]
    batch = {key: torch.stack([pixels[key] for _, pixels in good]) for key in good[0][1]} if good else {}
    return [i for i, _ in good], batch, failed


def file_key(path: Path) -> str:
    """Content hash of an image file: the disk cache key, independent of its name or folder."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_files(
    explainer: Explainer,
    paths: Sequence[Path],
    store: EmbeddingStore | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Unit-norm embeddings of image files, in order; unreadable files are reported, not fatal.

    Returns ([n_paths, dim] with zero rows for failures, {index: reason}).
    """
    model = explainer.model
    embeddings = np.zeros((len(paths), model.dim), np.float32)
    failures: dict[int, str] = {}
    keys: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            check_regular_file(Path(path))  # before the first byte is read: a FIFO would never answer
            keys[i] = file_key(path)
        except ImageError as error:
            failures[i] = str(error)
        except OSError as error:
            failures[i] = f"{path}: cannot read ({error.__class__.__name__})"
    cached = store.get_many("image-file", model.key, list(set(keys.values()))) if store else {}
    todo = []
    for i, key in keys.items():
        if key in cached:
            embeddings[i] = cached[key]
        else:
            todo.append(i)
    if progress:
        progress(len(paths) - len(todo))
    loader = DataLoader(
        _Files([paths[i] for i in todo], model.image_processor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    for positions, batch, failed in loader:
        for position, reason in failed:
            failures[todo[position]] = reason
        if positions:
            vectors = model.encode_pixels(batch)
            rows = [todo[p] for p in positions]
            embeddings[rows] = vectors
            explainer.images_encoded += len(rows)
            if store:
                store.put_many("image-file", model.key, [(keys[r], embeddings[r]) for r in rows])
        if progress:
            progress(len(positions) + len(failed))
    return embeddings, failures
