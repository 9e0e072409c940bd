"""Labelling a collection end to end, with any engine and any output format; resumable, writing in parts."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError
from explain.labelling.engines import EngineOptions, make_engine
from explain.labelling.outputs import WRITERS, assemble, done_paths, write_part
from explain.labelling.scorer import Labeller
from explain.labelling.sources import read_sources
from explain.models import load_model

PART_SIZE = 256  # rows per part: what a crash can lose at most


def label_collection(
    data: str | Path,
    descriptors: Mapping[str, Sequence[str]],
    model: str,
    out: str | Path,
    engine: str = "local",
    fmt: str = "parquet",
    top: int = 5,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    store: EmbeddingStore | None = None,
    ray_address: str | None = None,
    part_size: int = PART_SIZE,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
) -> dict:
    """Label every image of `data` not yet in `out`; returns {"labelled", "skipped", "failed", "files"}."""

    if fmt not in WRITERS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(WRITERS)}")
    runner = make_engine(engine, EngineOptions(batch_size, workers, device, store, ray_address))
    out = Path(out)
    with exclusive(out):
        return _label(data, descriptors, model, out, runner, fmt, top, device, store, part_size, progress)


def _label(data, descriptors, model, out, runner, fmt, top, device, store, part_size, progress) -> dict:
    done = done_paths(out)
    # A location such as s3://bucket/photos/ is read where it lies by an engine that can; otherwise list the images.
    remote = runner.reads_locations and "://" in str(data)
    paths = [] if remote else read_sources(data)
    todo = str(data) if remote else [p for p in paths if p not in done]
    explainer = Explainer(load_model(model, device), store=store)
    labeller = Labeller.build(explainer, descriptors, top, keep_logits=WRITERS[fmt].keeps_logits)
    step = progress(len(paths), len(paths) - len(todo)) if progress and not remote else None
    counts = {"labelled": 0, "failed": 0}

    def keep(rows: list[dict]) -> None:
        write_part(out, rows)
        counts["labelled"] += len(rows)
        counts["failed"] += sum(1 for row in rows if row["error"])
        if step:
            step(len(rows))

    if todo:
        runner.label(todo, explainer, labeller, keep, part_size, done)
    files = assemble(out, fmt, labeller.plan.classes, top)
    skipped = len(done) if remote else len(paths) - len(todo)
    return {"labelled": counts["labelled"], "skipped": skipped, "failed": counts["failed"], "files": files}


@contextlib.contextmanager
def exclusive(out: Path):
    """Hold `out` for one run: a second run into the same folder stops at once with one line naming the run
    that holds it. The lock is the operating system's (flock), so it is released when its run ends, however
    it ends, SIGKILL included."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".labelling.lock", "a+", encoding="utf-8")  # held until the run ends
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another run"
            raise ExplainError(
                f"{out} is being labelled by {holder}; wait for it, or label into another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"process {os.getpid()} on {socket.gethostname()}, started {started}")
        handle.flush()
        yield
    finally:
        handle.close()
