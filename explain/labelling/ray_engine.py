"""The Ray engine: the same scoring on Ray Data, from a laptop to a cluster with no code change.

`ray.data.from_items` lists the images; `map_batches` runs `EmbedAndLabel`,
a callable class whose actors each load the model once (`concurrency`
actors, `num_gpus` each on a GPU cluster) and score their batches with the
`Labeller` computed on the driver, so every actor uses the same text
embeddings. Rows stream back to the driver, which writes them in parts.
`--ray-address` connects to a running cluster (`ray start --head`); without
it Ray starts on this machine. Evaluation uses `embed_paths` for the image
embeddings alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from explain.errors import ExplainError, first_line


def start(address: str | None = None, cpus: int | None = None) -> None:
    """Connect to the cluster at `address`, or start Ray here (quietly, without its dashboard)."""
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    options = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=cpus or os.cpu_count(), **options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # Descry shows its own


class EmbedAndLabel:
    """One Ray actor: loads the model once, then embeds and (with a labeller) scores each batch of paths."""

    def __init__(self, model: str, device: str = "cpu", labeller=None):
        from explain.models import load_model

        self.model = load_model(model, device)
        self.labeller = labeller

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        from explain.images import open_image

        paths = [str(p) for p in batch["path"]]
        pixels = batch.get("image")  # present when Ray read the images itself (read_images)
        images, good, errors = [], [], {}
        for i, path in enumerate(paths):
            try:
                images.append(open_image(Image.fromarray(pixels[i]), path) if pixels is not None else open_image(path))
                good.append(i)
            except ExplainError as error:
                errors[i] = str(error)
            except Exception as error:  # an actor must never take the run down
                errors[i] = f"{path}: {first_line(error)}"
        embeddings = np.zeros((len(paths), self.model.dim), np.float32)
        if images:
            embeddings[good] = self.model.encode_images(images)
        if self.labeller is None:
            return {
                "path": paths,
                "embedding": list(embeddings),
                "error": [errors.get(i, "") for i in range(len(paths))],
            }
        return {"row": [json.dumps(row, ensure_ascii=False) for row in self.labeller.rows(paths, embeddings, errors)]}


def label_rows(
    paths,
    model: str,
    device: str,
    labeller,
    batch_size: int,
    workers: int,
    on_rows: Callable[[list[dict]], None],
    part_size: int,
    skip: set[str] = frozenset(),
) -> None:
    """Score every image on Ray and hand the rows to `on_rows` in parts of about `part_size`, as they finish.

    `paths` is a list of local paths, or one location that `ray.data.read_images` reads where it lies (an
    object-store prefix such as s3://bucket/photos/, or local://...), in which case Ray decodes the images
    and the images already in `skip` are left out.
    """
    import ray

    if isinstance(paths, str):
        dataset = ray.data.read_images(paths, include_paths=True, mode="RGB")
        if skip:
            dataset = dataset.filter(lambda row: row["path"] not in skip)
    else:
        dataset = ray.data.from_items([{"path": p} for p in paths])
    scored = _on_actors(dataset, model, device, batch_size, workers, labeller)
    for batch in scored.iter_batches(batch_size=part_size, batch_format="numpy"):
        on_rows([json.loads(text) for text in batch["row"]])


def embed_paths(
    paths: Sequence[str], model: str, device: str, batch_size: int, workers: int
) -> tuple[np.ndarray, dict[int, str]]:
    """Unit-norm image embeddings of `paths` in order, computed by Ray actors; failures by index."""
    import ray

    dataset = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])
    embedded = _on_actors(dataset, model, device, batch_size, workers)
    index = {p: i for i, p in enumerate(paths)}
    vectors, failures = None, {}
    for batch in embedded.iter_batches(batch_size=1024, batch_format="numpy"):
        for path, vector, error in zip(batch["path"], batch["embedding"], batch["error"], strict=True):
            if vectors is None:
                vectors = np.zeros((len(paths), len(vector)), np.float32)
            vectors[index[str(path)]] = vector
            if error:
                failures[index[str(path)]] = str(error)
    return (vectors if vectors is not None else np.zeros((len(paths), 0), np.float32)), failures


def _on_actors(dataset, model: str, device: str, batch_size: int, workers: int, labeller=None):
    """`dataset` mapped through `workers` EmbedAndLabel actors, one GPU each on a GPU machine."""
    return dataset.map_batches(
        EmbedAndLabel,
        fn_constructor_kwargs={"model": model, "device": device, "labeller": labeller},
        batch_size=batch_size,
        concurrency=max(1, workers),
        num_gpus=1 if device == "cuda" else 0,
    )
