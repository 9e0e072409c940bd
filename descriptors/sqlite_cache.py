"""An SQLite file used as a cache, which must never stop the work it speeds up.

Both caches (text and image embeddings, LLM answers) keep their rows in
SQLite. A cache is only an optimisation: when its file is damaged,
read-only, on a full disk or locked, the first error gives one warning and
the cache turns itself off for the rest of the process; every later call is
a miss or a no-op. This module knows nothing about what is stored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_log = logging.getLogger("descry")


class CacheDB:
    """One SQLite connection behind a lock; `run(action, default)` returns `default` once the file is unusable."""

    def __init__(self, path: str | Path, schema: str | Sequence[str], warn: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.failure: str | None = None  # why the cache was turned off, once it was
        self._warn = warn or _log.warning
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            with self._db:
                for statement in [schema] if isinstance(schema, str) else schema:
                    self._db.execute(statement)
        except (sqlite3.Error, OSError) as error:
            self._turn_off(error)

    @property
    def usable(self) -> bool:
        return self._db is not None

    def run(self, action: Callable[[sqlite3.Connection], T], default: T) -> T:
        with self._lock:
            if self._db is None:
                return default
            try:
                return action(self._db)
            except UnicodeError:
                return default  # one key the file cannot hold (a lone surrogate): a miss, not a broken cache
            except (sqlite3.Error, OSError, ValueError) as error:
                self._turn_off(error)
                return default

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _turn_off(self, error: BaseException) -> None:
        reason = (str(error).strip() or error.__class__.__name__).splitlines()[0]
        if self.failure is None:
            self.failure = reason
            self._warn(f"the cache {self.path} is unusable ({reason}); carrying on without it")
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
