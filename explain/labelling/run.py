"""Labelling a collection end to end, with any engine and any output format; resumable, writing in parts."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError
from explain.labelling.engines import EngineOptions, LabelTask, make_engine
from explain.labelling.outputs import WRITERS, assemble, done_paths, read_recipe, write_part, write_recipe
from explain.labelling.recipe import LabelRecipe, check_resumable, provenance
from explain.labelling.scorer import Labeller
from explain.labelling.sources import read_sources
from explain.models import backend_name, load_model

PART_SIZE = 256  # rows per part: what a crash can lose at most


@dataclass(frozen=True)
class RunOptions:
    """How a labelling run is carried out; none of it changes a label."""

    engine: str = "local"
    fmt: str = "parquet"
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    store: EmbeddingStore | None = None
    ray_address: str | None = None
    part_size: int = PART_SIZE
    verbose: bool = False  # Ray's own messages on the terminal rather than in OUT/ray.log
    command: tuple[str, ...] | None = None  # the command line recorded with the labels; None: this process's
    order: str = "input"  # the final file's row order: input, margin, probability, or review (margin)


class Progress(Protocol):
    """What a run tells its caller: what it is doing before the first images are embedded (None once they
    are), and how many images were just embedded."""

    def note(self, text: str | None) -> None: ...

    def step(self, count: int) -> None: ...


def label_collection(
    data: str | Path,
    recipe: LabelRecipe,
    out: str | Path,
    options: RunOptions = RunOptions(),
    progress: Callable[[int, int], Progress | None] | None = None,
) -> dict:
    """Label every image of `data` not yet in `out`; returns {"labelled", "skipped", "failed", "files",
    "provenance"}. `progress(total, already)` makes the caller's progress display."""
    if options.fmt not in WRITERS:
        raise ValueError(f"format {options.fmt!r} is not one of {', '.join(WRITERS)}")
    out = Path(out)
    o = options
    runner = make_engine(
        o.engine,
        EngineOptions(o.batch_size, o.workers, o.device, o.store, o.ray_address, out / "ray.log", o.verbose),
    )
    with exclusive(out):
        return _label(data, recipe, out, runner, options, progress)


def _label(data, recipe: LabelRecipe, out: Path, runner, options: RunOptions, progress) -> dict:
    keeps_logits = WRITERS[options.fmt].keeps_logits
    classes = list(recipe.match().descriptors)
    record = provenance(recipe, backend_name(recipe.model), classes, keeps_logits, options.command)
    stored = read_recipe(out)
    check_resumable(stored, record, out)
    done = done_paths(out)
    if stored is None:
        if done:
            raise ExplainError(
                f"{out} holds labels with no record of how they were made (an earlier Descry); "
                "label into another --out, or delete its parts/ folder to start again"
            )
        write_recipe(out, record)
    # A location such as s3://bucket/photos/ is read where it lies by an engine that can; otherwise list the images.
    remote = runner.reads_locations and "://" in str(data)
    paths = [] if remote else read_sources(data)
    todo = str(data) if remote else [p for p in paths if p not in done]
    shown = progress(len(paths), len(paths) - len(todo)) if progress and not remote else None
    counts = {"labelled": 0, "failed": 0, "abstained": 0}

    def keep(rows: list[dict]) -> None:
        write_part(out, rows)
        counts["labelled"] += len(rows)
        counts["failed"] += sum(1 for row in rows if row["error"])
        counts["abstained"] += sum(1 for row in rows if row.get("abstained"))

    def prepare():
        explainer = Explainer(load_model(recipe.model, options.device, recipe.precision), store=options.store)
        labeller = Labeller.build(explainer, recipe, keep_logits=keeps_logits)
        record["probability_rule"] = labeller.rule.record()  # what "probability" means in these rows
        record["precision_used"] = {
            "precision": explainer.model.precision_name,
            "why": explainer.model.precision_reason,
        }
        write_recipe(out, record)
        return explainer, labeller

    if todo:
        note = shown.note if shown else (lambda text: None)
        advance = shown.step if shown else None
        runner.label(
            LabelTask(todo, recipe.model, prepare, keep, options.part_size, done, note, advance, recipe.precision)
        )
    elif stored:
        record["probability_rule"] = stored.get("probability_rule")
        record["precision_used"] = stored.get("precision_used")
    files = assemble(out, options.fmt, record, options.order)
    skipped = len(done) if remote else len(paths) - len(todo)
    return {
        "labelled": counts["labelled"],
        "skipped": skipped,
        "failed": counts["failed"],
        "abstained": counts["abstained"],
        "files": files,
        "provenance": record,
    }


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
