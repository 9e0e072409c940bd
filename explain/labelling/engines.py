"""Where images are embedded: the one table of engines, shared by labelling and evaluation.

`ENGINES` maps a name to an engine class; `make_engine` builds one from
the options every engine takes. Each engine answers two questions behind
one interface: `embed` (image files to unit-norm embeddings, failures by
index; evaluation's need) and `label` (image paths to label rows, handed
on in parts; labelling's need). `local` decodes with a DataLoader on this
machine and uses the disk cache; `ray` runs the same scoring on Ray Data
actors, here or on a cluster, and can read a location such as
s3://bucket/photos/ where it lies. Adding an engine is one class and one row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain.cache import EmbeddingStore
from explain.datasets import embed_files
from explain.engine import Explainer
from explain.models import resolve_device

Rows = Callable[[list[dict]], None]  # receives each part of label rows as it is done
Step = Callable[[int], None] | None  # told how many images were just done


@dataclass
class EngineOptions:
    """What every engine is built from; each uses what applies to it."""

    batch_size: int = 64
    workers: int = 2  # decoding processes (local) or actors (ray)
    device: str = "auto"
    store: EmbeddingStore | None = None  # the disk cache (local)
    address: str | None = None  # a running Ray cluster (ray); None starts Ray here


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

    def label(self, todo, explainer: Explainer, labeller, keep: Rows, part_size: int, done: set[str]) -> None:
        for start in range(0, len(todo), part_size):
            chunk = todo[start : start + part_size]
            embeddings, failures = self.embed(explainer, [Path(p) for p in chunk])
            keep(labeller.rows(chunk, embeddings, failures))


class RayEngine:
    """Score on Ray Data actors that load the model once each; Ray starts on first use."""

    reads_locations = True  # s3://..., local://...: read where they lie

    def __init__(self, options: EngineOptions):
        self.options = options

    def _start(self) -> str:
        from explain.labelling import ray_engine

        ray_engine.start(self.options.address)
        return resolve_device(self.options.device).type

    def embed(
        self, explainer: Explainer, paths: Sequence[Path], step: Step = None
    ) -> tuple[np.ndarray, dict[int, str]]:
        from explain.labelling import ray_engine

        device, o = self._start(), self.options
        vectors, failures = ray_engine.embed_paths(
            [str(p) for p in paths], explainer.model.name, device, o.batch_size, o.workers
        )
        if step:
            step(len(paths))
        return vectors, failures

    def label(self, todo, explainer: Explainer, labeller, keep: Rows, part_size: int, done: set[str]) -> None:
        from explain.labelling import ray_engine

        device, o = self._start(), self.options
        ray_engine.label_rows(
            todo, explainer.model.name, device, labeller, o.batch_size, o.workers, keep, part_size, done
        )


ENGINES = {"local": LocalEngine, "ray": RayEngine}


def make_engine(name: str, options: EngineOptions) -> LocalEngine | RayEngine:
    """The engine called `name`, built from `options`."""
    if name not in ENGINES:
        raise ValueError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    return ENGINES[name](options)
