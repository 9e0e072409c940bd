"""The Ray engine: image embeddings on Ray Data actors, from a laptop to a cluster with no code change.

`ray.data.from_items` lists the images (or `read_images` reads a location
such as s3://bucket/photos/ where it lies); `map_batches` runs
`EmbedImages` on a fixed pool of actors (`ActorPoolStrategy`), each of
which loads the model once, by name, so that Ray can rebuild an actor it
restarts from its tiny constructor arguments. The actors only embed: the
driver scores the embeddings with the same `Labeller` as the local engine,
so the text embeddings are computed once, here, and never on an actor.
`EmbeddingStream` starts the cluster and the actors first and reads their
batches from a background thread, so that they start while the driver
loads its own copy of the model and encodes the prompts. Ray's own
messages (start-up notes, warnings, a raylet's state dump after a lost
node) go to a log file rather than the terminal unless asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from explain.errors import ExplainError, first_line

_DONE = object()  # the end of a stream of batches


def start(address: str | None = None, cpus: int | None = None, verbose: bool = False) -> bool:
    """Connect to the cluster at `address`, or start Ray here, without its dashboard; True when this call
    started or joined it (and so should end it), False when Ray was already up in this process."""
    import ray
    import ray.data  # configures Ray Data's loggers on import; quietened below, after that

    quiet = logging.WARNING if verbose else logging.ERROR
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(quiet)
    if ray.is_initialized():
        return False
    options = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": quiet,
    }
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=cpus or os.cpu_count(), **options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # Descry shows its own
    return True


@contextlib.contextmanager
def native_stderr_to(log: Path | None):
    """Send what native code writes to file descriptor 2 (Ray's C++ core, raylet dumps, loggers bound to
    the old stream) to `log`, while Python's `sys.stderr` (Descry's messages and progress) still reaches
    the terminal. With no `log`, nothing changes."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 2)
    saved, sys.stderr = sys.stderr, os.fdopen(os.dup(terminal), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = saved
        os.dup2(terminal, 2)
        os.close(terminal)


class EmbedImages:
    """One Ray actor: loads the model once, by name, then embeds each batch of images it is given."""

    def __init__(self, model: str, device: str = "cpu", precision: str = "auto"):
        import ray
        import torch

        from explain.models import load_model

        # One actor per node is the cheap way to use a node: one import, one copy of the weights, and
        # torch's threads across every CPU Ray gave it (Ray's own OMP setting would leave it one).
        cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
        torch.set_num_threads(max(1, cpus))

        self.model = load_model(model, device, precision)

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
        return {"path": paths, "embedding": list(embeddings), "error": [errors.get(i, "") for i in range(len(paths))]}


def cpus_per_worker(workers: int) -> int:
    """The cluster's CPUs shared among `workers` actors, at least one each."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, workers))


class EmbeddingStream:
    """Image embeddings from Ray actors, started at once and read in the background.

    Iterate to get (paths, embeddings [n, dim], {index: reason}) for each block an actor finishes; the
    actors start (and import, and load the model) as soon as this is built, while the caller does its
    own work. Errors on the Ray side come out of the iteration.
    """

    def __init__(self, items, model: str, device: str, batch_size: int, workers: int, skip=(), precision: str = "auto"):
        import ray

        if isinstance(items, str):  # a location Ray reads where it lies; its decoded pixels come along
            dataset = ray.data.read_images(items, include_paths=True, mode="RGB")
            if skip:
                skip = set(skip)
                dataset = dataset.filter(lambda row: row["path"] not in skip)
        else:
            dataset = ray.data.from_items([{"path": p} for p in items])
        embedded = dataset.map_batches(
            EmbedImages,
            fn_constructor_kwargs={"model": model, "device": device, "precision": precision},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            # Ray's own read tasks need a CPU of their own, so actors reading a location keep to one.
            num_cpus=1 if device == "cuda" or isinstance(items, str) else cpus_per_worker(workers),
            num_gpus=1 if device == "cuda" else 0,
        )
        self._batches: queue.Queue = queue.Queue(maxsize=4)
        self._reader = threading.Thread(target=self._read, args=(embedded,), daemon=True)
        self._reader.start()

    def _read(self, embedded) -> None:
        try:
            for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):  # blocks as they come
                paths = [str(p) for p in batch["path"]]
                errors = {i: str(e) for i, e in enumerate(batch["error"]) if e}
                self._batches.put((paths, np.stack(list(batch["embedding"])).astype(np.float32), errors))
        except BaseException as error:  # handed to the reader of the stream, never lost in this thread
            self._batches.put(error)
        self._batches.put(_DONE)

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray, dict[int, str]]]:
        while (item := self._batches.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item


def embed_paths(
    paths: Sequence[str], model: str, device: str, batch_size: int, workers: int, precision: str = "auto"
) -> tuple[np.ndarray, dict[int, str]]:
    """Unit-norm image embeddings of `paths` in order, computed by Ray actors; failures by index."""
    index = {p: i for i, p in enumerate(paths)}
    vectors, failures = None, {}
    for found, embeddings, errors in EmbeddingStream(list(paths), model, device, batch_size, workers, (), precision):
        if vectors is None:
            vectors = np.zeros((len(paths), embeddings.shape[1]), np.float32)
        for j, path in enumerate(found):
            vectors[index[path]] = embeddings[j]
            if j in errors:
                failures[index[path]] = errors[j]
    return (vectors if vectors is not None else np.zeros((len(paths), 0), np.float32)), failures
