"""Where images are embedded: the one table of engines, shared by labelling and evaluation.

`ENGINES` maps a name to an engine class; `make_engine` builds one from
the options every engine takes. Each engine answers two questions behind
one interface: `embed` (image files to unit-norm embeddings, failures by
index; evaluation's need) and `label` (a `LabelTask`'s images to label
rows, handed on in parts; labelling's need). `local` decodes with a
DataLoader on this machine and uses the disk cache; `ray` embeds on Ray
Data actors, here or on a cluster, and can read a location such as
s3://bucket/photos/ where it lies. Either way the rows are scored here, by
one `Labeller`. Adding an engine is one class and one row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explain.cache import EmbeddingStore
from explain.datasets import embed_files
from explain.engine import Explainer
from explain.models import resolve_device

Rows = Callable[[list[dict]], None]  # receives each part of label rows as it is done
Step = Callable[[int], None] | None  # told how many images were just done
Note = Callable[[str | None], None]  # told what is happening before the first rows (None: labelling now)


@dataclass
class EngineOptions:
    """What every engine is built from; each uses what applies to it."""

    batch_size: int = 64
    workers: int = 2  # decoding processes (local) or actors (ray)
    device: str = "auto"
    store: EmbeddingStore | None = None  # the disk cache (local)
    address: str | None = None  # a running Ray cluster (ray); None starts Ray here
    log: Path | None = None  # where Ray's own messages go (ray); None: the terminal
    verbose: bool = False  # show Ray's own messages on the terminal (ray)


@dataclass
class LabelTask:
    """One labelling run as an engine sees it. `prepare` loads the model in this process and builds the
    scorer (the prompts encoded once, here); an engine calls it when it suits it, after starting its
    workers if it has any, so that they start while the model loads."""

    todo: list[str] | str  # paths, or one location an engine that `reads_locations` reads where it lies
    model: str
    prepare: Callable[[], tuple[Explainer, object]]  # -> (explainer, Labeller)
    keep: Rows  # writes one part
    part_size: int
    skip: set[str] = field(default_factory=set)  # already labelled (for a location, whose paths are not listed)
    note: Note = lambda text: None
    advance: Step = None  # told as images are embedded, before their part is written
    precision: str = "auto"  # the towers' precision, for engines that load the model elsewhere (Ray's actors)


class LocalEngine:
    """Decode with a DataLoader of `workers` processes here, and cache embeddings on disk."""

    reads_locations = False  # only local files

    def __init__(self, options: EngineOptions):
        self.options = options

    def embed(
        self, explainer: Explainer, paths: Sequence[Path], step: Step = None
    ) -> tuple[np.ndarray, dict[int, str]]:
        o = self.options
        return embed_files(explainer, list(paths), o.store, o.batch_size, o.workers, step)

    def label(self, task: LabelTask) -> None:
        explainer, labeller = task.prepare()
        task.note(None)
        for start in range(0, len(task.todo), task.part_size):
            chunk = task.todo[start : start + task.part_size]
            embeddings, failures = self.embed(explainer, [Path(p) for p in chunk], task.advance)
            task.keep(labeller.rows(chunk, embeddings, failures))


class RayEngine:
    """Embed on Ray Data actors that load the model once each; score here. Ray starts on first use."""

    reads_locations = True  # s3://..., local://...: read where they lie

    def __init__(self, options: EngineOptions):
        self.options = options

    @contextlib.contextmanager
    def _ray(self):
        from explain.labelling import ray_engine

        o = self.options
        with ray_engine.native_stderr_to(None if o.verbose else o.log):
            started = ray_engine.start(o.address, verbose=o.verbose)
            try:
                yield resolve_device(o.device).type
            finally:
                if started:
                    import ray

                    ray.shutdown()

    def embed(
        self, explainer: Explainer, paths: Sequence[Path], step: Step = None
    ) -> tuple[np.ndarray, dict[int, str]]:
        from explain.labelling import ray_engine

        o = self.options
        with self._ray() as device:
            vectors, failures = ray_engine.embed_paths(
                [str(p) for p in paths], explainer.model.name, device, o.batch_size, o.workers,
                explainer.model.precision_name,
            )  # fmt: skip
        if step:
            step(len(paths))
        return vectors, failures

    def label(self, task: LabelTask) -> None:
        from explain.labelling import ray_engine

        o = self.options
        where = f"the Ray cluster at {o.address}" if o.address else "Ray"
        task.note(f"starting {where} and {max(1, o.workers)} workers")
        with self._ray() as device:
            stream = ray_engine.EmbeddingStream(
                task.todo, task.model, device, o.batch_size, o.workers, task.skip, task.precision
            )
            _, labeller = task.prepare()  # the model loads here while the actors start
            waiting: list[dict] = []
            for paths, embeddings, errors in stream:  # each block as an actor finishes it
                if not waiting:
                    task.note(None)
                waiting.extend(labeller.rows(paths, embeddings, errors))
                if task.advance:
                    task.advance(len(paths))
                while len(waiting) >= task.part_size:
                    task.keep(waiting[: task.part_size])
                    del waiting[: task.part_size]
            if waiting:
                task.keep(waiting)


ENGINES = {"local": LocalEngine, "ray": RayEngine}


def make_engine(name: str, options: EngineOptions) -> LocalEngine | RayEngine:
    """The engine called `name`, built from `options`."""
    if name not in ENGINES:
        raise ValueError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    return ENGINES[name](options)
