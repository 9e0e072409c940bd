"""Labelling a collection end to end, with either engine; resumable, writing in parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.labelling.outputs import FORMATS, assemble, done_paths, write_part
from explain.labelling.scorer import Labeller
from explain.labelling.sources import read_sources
from explain.models import load_model, resolve_device

ENGINES = ("local", "ray")
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
    from explain.evaluate import embed_files

    if engine not in ENGINES or fmt not in FORMATS:
        raise ValueError(f"engine must be one of {ENGINES} and format one of {FORMATS}")
    out = Path(out)
    done = done_paths(out)
    # A location such as s3://bucket/photos/ is read by Ray where it lies; otherwise list the images here.
    remote = engine == "ray" and "://" in str(data)
    paths = [] if remote else read_sources(data)
    todo = str(data) if remote else [p for p in paths if p not in done]
    explainer = Explainer(load_model(model, device), store=store)
    labeller = Labeller.build(explainer, descriptors, top, keep_logits=fmt == "fiftyone")
    step = progress(len(paths), len(paths) - len(todo)) if progress and not remote else None
    counts = {"labelled": 0, "failed": 0}

    def keep(rows: list[dict]) -> None:
        write_part(out, rows)
        counts["labelled"] += len(rows)
        counts["failed"] += sum(1 for row in rows if row["error"])
        if step:
            step(len(rows))

    if todo and engine == "local":
        for start in range(0, len(todo), part_size):
            chunk = todo[start : start + part_size]
            embeddings, failures = embed_files(explainer, [Path(p) for p in chunk], store, batch_size, workers)
            keep(labeller.rows(chunk, embeddings, failures))
    elif todo:
        from explain.labelling import ray_engine

        ray_engine.start(ray_address)
        ray_engine.label_rows(todo, model, resolve_device(device).type, labeller, batch_size, workers, keep, part_size, done)
    files = assemble(out, fmt, labeller.plan.classes, top)
    return {"labelled": counts["labelled"], "skipped": len(done) if remote else len(paths) - len(todo), "failed": counts["failed"], "files": files}
