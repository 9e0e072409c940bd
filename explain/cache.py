"""Embedding caches: a bounded in-memory LRU and an optional on-disk store.

Live editing stays cheap because a prompt or an image is encoded once per
model: later lookups hit `EmbeddingLRU` (memory, bounded in bytes) and then
`EmbeddingStore` (an SQLite file that survives restarts). Keys are plain
strings chosen by the caller, e.g. a model fingerprint plus a prompt or an
image's content hash. Nothing here knows what the vectors mean.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from descriptors.sqlite_cache import CacheDB


class EmbeddingLRU:
    """A thread-safe least-recently-used map from key to vector, bounded by total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        with self._lock:
            vector = self._entries.get((namespace, key))
            if vector is not None:
                self._entries.move_to_end((namespace, key))
            return vector

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors found among `keys`, under one lock (a 1,000-class set looks up 7,000 prompts)."""
        found = {}
        with self._lock:
            entries = self._entries
            for key in keys:
                vector = entries.get((namespace, key))
                if vector is not None:
                    entries.move_to_end((namespace, key))
                    found[key] = vector
        return found

    def put(self, namespace: str, key: str, vector: np.ndarray) -> None:
        vector = np.asarray(vector)
        if vector.nbytes > self.max_bytes:
            return
        vector.setflags(write=False)  # callers share the stored array; keep it immutable
        with self._lock:
            old = self._entries.pop((namespace, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(namespace, key)] = vector
            self._bytes += vector.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes


DEFAULT_STORE_MB = (
    1024  # $DESCRY_CACHE_MB: the embedding file's bound (ImageNet's 50,000 images at 768 dimensions: 150 MB)
)


class EmbeddingStore:
    """Vectors on disk in one SQLite file, keyed by (kind, model fingerprint, key), within a size bound.

    SQLite gives atomic writes and safe sharing between processes for free,
    and one file holds the 5,800 prompts of the ImageNet descriptor set
    without thousands of small files. The vectors together stay under
    `max_bytes` of file: past it, the least recently used go first (a lookup
    that finds an entry on disk counts as a use), down to 80% of the bound,
    and the file gives the space back. A damaged, read-only or full cache file
    gives one warning (through `warn`) and is then left alone: lookups miss
    and writes are skipped, and classification carries on.
    """

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None, max_bytes: int | None = None):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._db = CacheDB(
            self.path,
            [
                "PRAGMA auto_vacuum = INCREMENTAL",  # takes effect on a new file: freed pages can be given back
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " kind TEXT NOT NULL, model TEXT NOT NULL, key TEXT NOT NULL,"
                " dim INTEGER NOT NULL, vector BLOB NOT NULL, used REAL NOT NULL DEFAULT 0,"
                " PRIMARY KEY (kind, model, key))",
            ],
            warn,
        )
        self._db.run(_add_use_times, None)
        self.trim()

    @property
    def usable(self) -> bool:
        return self._db.usable

    def get_many(self, kind: str, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        def read(db) -> dict[str, np.ndarray]:
            found: dict[str, np.ndarray] = {}
            for chunk in _chunks(list(keys), 500):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, dim, vector FROM embeddings WHERE kind = ? AND model = ? AND key IN ({marks})",
                    (kind, model, *chunk),
                )
                for key, dim, blob in rows:
                    vector = (
                        np.frombuffer(blob, dtype=np.float32) if isinstance(blob, bytes) else np.zeros(0, np.float32)
                    )
                    if vector.size == dim and dim > 0:
                        found[key] = vector
            if found and self.max_bytes is not None:
                with db:
                    for chunk in _chunks(list(found), 500):
                        marks = ",".join("?" * len(chunk))
                        db.execute(
                            f"UPDATE embeddings SET used = ? WHERE kind = ? AND model = ? AND key IN ({marks})",
                            (time.time(), kind, model, *chunk),
                        )
            return found

        return self._db.run(read, {})

    def put_many(self, kind: str, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        now = time.time()
        rows = [
            (kind, model, key, int(vector.size), np.ascontiguousarray(vector, dtype=np.float32).tobytes(), now)
            for key, vector in items
        ]

        def write(db) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows)

        self._db.run(write, None)
        if self.max_bytes is not None:
            self.trim()  # a look at three counters of the file; it drops entries only past the bound

    def size(self) -> int:
        """The bytes the file's pages in use take (a vector of 512 floats fills half a page or more)."""
        return self._db.run(_pages_in_use, 0)

    def trim(self) -> None:
        """Past `max_bytes`, drop the least recently used vectors down to 80% of it, and shrink the file."""
        if self.max_bytes is None:
            return
        target = int(0.8 * self.max_bytes)

        def drop(db) -> None:
            if _pages_in_use(db) <= self.max_bytes:
                return
            rows = int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
            while rows and _pages_in_use(db) > target:
                step = max(100, rows // 20)  # the oldest twentieth at a time, then look again
                with db:
                    db.execute(
                        "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings ORDER BY used LIMIT ?)",
                        (step,),
                    )
                rows = max(0, rows - step)
            db.execute("PRAGMA incremental_vacuum")  # the freed pages go back to the file system

        self._db.run(drop, None)

    def close(self) -> None:
        self._db.close()


def _pages_in_use(db) -> int:
    pages, free, size = (
        int(db.execute(f"PRAGMA {name}").fetchone()[0]) for name in ("page_count", "freelist_count", "page_size")
    )
    return (pages - free) * size


def _add_use_times(db) -> None:
    """A file made before use times were kept gets the column; its entries count as the least recently used."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(embeddings)")}
    if "used" not in columns:
        with db:
            db.execute("ALTER TABLE embeddings ADD COLUMN used REAL NOT NULL DEFAULT 0")


def open_store(
    directory: str | Path, warn: Callable[[str], None], max_mb: float | None = None
) -> EmbeddingStore | None:
    """The embedding store in `directory` (embeddings.sqlite3), or None if it cannot be used at all.

    The CLI and the app both open theirs here, bounded to `max_mb` (default: $DESCRY_CACHE_MB, else
    `DEFAULT_STORE_MB`). A file that is or becomes damaged, read-only, full or locked gives one warning
    through `warn` and is then bypassed; classification carries on with the memory caches.
    """
    if max_mb is None:
        setting = os.environ.get("DESCRY_CACHE_MB", "")
        try:
            max_mb = float(setting) if setting else DEFAULT_STORE_MB
        except ValueError:
            warn(f"DESCRY_CACHE_MB={setting!r} is not a number; the cache is bounded to {DEFAULT_STORE_MB} MB")
            max_mb = DEFAULT_STORE_MB
    store = EmbeddingStore(Path(directory) / "embeddings.sqlite3", warn, int(max_mb * 2**20))
    return store if store.usable else None


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
