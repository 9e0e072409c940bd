"""The one interface every backend's model has, and what all backends share.

`EncoderModel` is what the engine, evaluation and the app use: unit-norm
text and image embeddings, the model's own logit scale and bias, and a
fingerprint for cache keys. Nothing above this package knows which library
built a model. Backends live beside it (`transformers_backend`,
`open_clip_backend`), and the package's `BACKENDS` table picks one from the
name. What every backend shares lives here too: the device choice and the
fingerprint of a model folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from explain.errors import HeatmapsUnavailable, ModelLoadError
from explain.models.gradient_maps import METHOD as GRADIENT_METHOD
from explain.models.gradient_maps import UNITS as GRADIENT_UNITS
from explain.models.gradient_maps import last_block
from explain.models.precision import CACHE_NAMES, autocast, prepare_module, resolve_precision

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEVICES = ("auto", "cpu", "cuda", "mps")
TEXT_BATCH = 64  # prompts per text forward once sorted by length; chosen by measuring (bench/bench_text_encoding.py)


def configured_models(flags: Sequence[str] | None = None) -> list[str]:
    """Model names from --model flags, else $EXPLAIN_MODEL (comma-separated), else the default."""
    names = list(flags or [name.strip() for name in os.environ.get("EXPLAIN_MODEL", "").split(",") if name.strip()])
    return list(dict.fromkeys(names)) or [DEFAULT_MODEL]


def resolve_device(device: str = "auto") -> torch.device:
    """Pick the device: CUDA, then Apple's MPS, then the CPU, unless one is named."""
    if device not in DEVICES:
        raise ModelLoadError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA GPU is available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("--device mps was asked for but Apple's MPS backend is not available")
    return torch.device(device)


HUB_PROBE_SECONDS = 3.0  # how long to wait for the model hub before working from the local cache only
_hub_state: dict[str, bool] = {}
_hub_lock = threading.Lock()


def hub_reachable() -> bool:
    """Whether the model hub can be reached; asked once per process, within `HUB_PROBE_SECONDS`.

    With $HF_HUB_OFFLINE set, or when the hub's host does not answer in time, the hub libraries are put in
    offline mode, so that a model in the local cache loads at once and one that is not fails in one line,
    instead of retrying for a minute.
    """
    with _hub_lock:
        if "reachable" not in _hub_state:
            import huggingface_hub.constants as hub

            reachable = not hub.HF_HUB_OFFLINE and _answers(hub.ENDPOINT, HUB_PROBE_SECONDS)
            if not reachable:
                hub.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub, transformers and open_clip
            _hub_state["reachable"] = reachable
        return _hub_state["reachable"]


def _answers(url: str, seconds: float) -> bool:
    """Whether a TCP connection to the URL's host opens in time (name lookup included)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=seconds):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a hung name lookup cannot hold the caller
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


@contextlib.contextmanager
def quiet_loading():
    """No progress bars from transformers or huggingface_hub while a model loads ("Loading weights 0%...100%"
    on every run), unless $DESCRY_VERBOSE asks for them."""
    if os.environ.get("DESCRY_VERBOSE"):
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    bars, downloads = transformers_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
        if downloads:
            hub_utils.enable_progress_bars()


OFFLINE_ADVICE = (
    "it is not in the local model cache, and the model hub cannot be reached from here; run once with internet "
    "to cache it, or pass --model DIR with a folder saved by save_pretrained (or holding open_clip_config.json "
    "and its weights); set HF_HUB_OFFLINE=1 to skip the hub check"
)


def folder_fingerprint(folder: str | Path) -> str:
    """Names the weights in a model folder by its path and its files' names, sizes and times, so that the
    disk caches never mix two versions of a checkpoint saved to the same place."""
    folder = Path(folder).resolve()
    digest = hashlib.blake2b(str(folder).encode(), digest_size=12)
    for file in sorted(folder.iterdir()):
        if file.is_file():
            info = file.stat()
            digest.update(f"{file.name}:{info.st_size}:{info.st_mtime_ns}".encode())
    return f"dir:{folder}@{digest.hexdigest()}"


MAX_HEATMAP_SIZE = 1024  # px: ViT-B/32 at 1024 is a 32×32 grid; a larger input costs minutes and gigabytes


def check_heatmap_size(size: int | None) -> None:
    """Refuse an input size for heatmaps outside what the towers can take in bounded time and memory."""
    if size is not None and not 32 <= size <= MAX_HEATMAP_SIZE:
        raise HeatmapsUnavailable(f"a heatmap size of {size} px is outside 32 to {MAX_HEATMAP_SIZE} px")


def query_query_attention(q: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """ClearCLIP's attention (Lan et al., ECCV 2024): each token attends to the values by softmax(q qᵀ / √d)
    of its own queries, head by head; the heads joined again, before the output projection.
    q, v: [batch, tokens, width] -> [batch, tokens, width]"""
    batch, tokens, width = q.shape
    q, v = (t.view(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, v))  # [batch, heads, tokens, d]
    weights = torch.softmax(q @ q.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(batch, tokens, width)


def check_gradient_maps(model: EncoderModel, tower: torch.nn.Module, size: int | None, prefix: str) -> None:
    """Refuse what the gradient fallback cannot do: a finer grid, a tower packed to int8, or one without a
    list of blocks to take gradients at."""
    try:
        last_block(tower)
    except HeatmapsUnavailable as error:
        raise HeatmapsUnavailable(prefix + str(error)) from None
    if size is not None:
        raise HeatmapsUnavailable(
            f"a finer grid for {model.name} is not offered: its maps come from gradients at its own input size"
        )
    if model.precision == "int8":
        raise HeatmapsUnavailable(
            prefix + "its map comes from gradients, which int8's packed weights do not give; use another --precision"
        )


class EncoderModel(ABC):
    """A loaded image-text model with what scoring needs to know about it.

    Embeddings come back as float32 numpy arrays with unit-norm rows,
    whatever precision the model runs in. Subclasses set `name`, `device`,
    `dtype`, `fingerprint`, `logit_scale`, `logit_bias`, `max_text_length`,
    `dim`, `sigmoid_loss` (where true) and `image_processor` (a picklable callable
    `image_processor(images=[...], return_tensors="pt")` -> dict of tensors,
    run in data-loader workers), and may add `notes` for the user.
    """

    name: str
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    logit_scale: float
    logit_bias: float
    max_text_length: int
    dim: int
    image_processor: Callable
    notes: list[str]
    backend: str = "model"
    sigmoid_loss: bool = False  # trained with a per-pair sigmoid (SigLIP): its own probabilities are sigmoids

    precision: str | None = None  # fp32, bf16, fp16 or int8, once `use_precision` chose it
    precision_reason: str = ""

    @property
    def key(self) -> str:
        """Identifies this model, its backend and precision in cache keys: embeddings made in one precision
        are never served for another."""
        running = CACHE_NAMES[self.precision] if self.precision else str(self.dtype).removeprefix("torch.")
        return f"{self.backend}:{self.fingerprint}|{running}"

    @property
    def precision_name(self) -> str:
        """The precision the towers run in, as `--precision` names it."""
        return self.precision or ("fp16" if self.dtype == torch.float16 else "fp32")

    def use_precision(self, requested: str = "auto") -> None:
        """Run the towers in `requested` (see `precision`): auto chooses for this device and CPU."""
        precision, reason = resolve_precision(requested, self.device)
        self.model = prepare_module(self.model, precision)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.precision, self.precision_reason = precision, reason

    @abstractmethod
    def encode_texts(
        self, prompts: Sequence[str], batch_size: int = TEXT_BATCH, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Unit-norm text embeddings, in the order given; `progress(n)` after each batch. # [n_prompts, dim]"""

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """The image tensors on the CPU, as a data-loader worker would make them."""
        return dict(self.image_processor(images=list(images), return_tensors="pt"))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-norm image embeddings. # [n_images, dim]"""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(self.preprocess(images))

    @abstractmethod
    def encode_pixels(self, pixels: dict[str, torch.Tensor]) -> np.ndarray:
        """Unit-norm embeddings of already-preprocessed images. # [n_images, dim]"""

    def check_heatmaps(self, size: int | None = None) -> None:
        """Raise `HeatmapsUnavailable`, saying why, when this model cannot give heatmaps (at `size`); cheap, so
        that a caller can refuse before any image is classified."""
        check_heatmap_size(size)
        raise HeatmapsUnavailable(
            f"maps of where a descriptor matches are not available for {self.name} ({self.backend} model)"
        )

    @property
    def family(self) -> str:
        """The model family, as its library names it (clip, siglip, align, ...)."""
        return self.backend

    @property
    def map_recipe(self) -> str | None:
        """Which of `MAP_RECIPES` this model's image tower follows; None when it has none."""
        return None

    @property
    def map_method(self) -> str:
        """How this model's maps are made, in words that cite the method; empty when it has none."""
        return MAP_RECIPES[self.map_recipe].method if self.map_recipe else ""

    @property
    def map_units(self) -> str:
        """What the numbers of this model's maps are; empty when it has no maps."""
        return MAP_RECIPES[self.map_recipe].units if self.map_recipe else ""

    @property
    def map_in_bar_units(self) -> bool:
        """Whether this model's maps are in its bars' units (the training-free recipes), not a share of the
        score (the gradient fallback)."""
        recipe = MAP_RECIPES.get(self.map_recipe or "")
        return recipe is None or recipe.units == BAR_UNITS

    @property
    def map_bias(self) -> float:
        """What is added to scale · (features · text) at each location: the logit bias where a map is in the
        bar's units, nothing where it is a share of the score."""
        return self.logit_bias if self.map_in_bar_units else 0.0

    def map_region(self, picture: Image.Image) -> tuple[int, int, int, int]:
        """The part of `picture` the map's grid covers: CLIP-style processors scale the short side and crop the
        centre square. (left, top, right, bottom)"""
        side = min(picture.size)
        left, top = (picture.width - side) // 2, (picture.height - side) // 2
        return (left, top, left + side, top + side)

    def patch_embeddings(self, image: Image.Image, size: int | None = None) -> np.ndarray:
        """Each location's feature of one image on the tower's grid, by its recipe (`map_recipe`): what heatmaps
        are made of. Unit-norm, so that scale · (feature · text) + `map_bias` is the bar's score there; for the
        gradient fallback, unnormalised shares, so that the same product is the location's share of it.
        # [grid_h, grid_w, dim]

        What a tower cannot give raises `HeatmapsUnavailable` (see `check_heatmaps`).
        """
        self.check_heatmaps(size)
        raise HeatmapsUnavailable(f"{self.name} ({self.backend} model) gives no patch embeddings")


BAR_UNITS = "the descriptor's score at each location, in the units of its bar (scale · cosine + bias)"


@dataclass(frozen=True)
class MapRecipe:
    """How one kind of image tower gives a feature at each location of its grid, and what the maps mean."""

    method: str  # in words that cite the method
    units: str = BAR_UNITS


MAP_RECIPES = {  # every map recipe, declared once; each backend says which one its tower follows
    "clearclip": MapRecipe("ClearCLIP's last block (Lan et al., ECCV 2024)"),
    "attention-pool-values": MapRecipe("MaskCLIP's value path through the attention pool (Zhou et al., ECCV 2022)"),
    "average-pool": MapRecipe("each location's feature of an average-pooled tower"),
    "gradient": MapRecipe(GRADIENT_METHOD, GRADIENT_UNITS),
}


def tower(method: Callable) -> Callable:
    """A tower's forward pass: no autograd, in the model's precision (bf16 runs under autocast)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with torch.inference_mode(), autocast(self.precision or "fp32", self.device):
            return method(self, *args, **kwargs)

    return run
