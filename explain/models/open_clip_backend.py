"""The OpenCLIP backend: CLIPA, EVA-CLIP, DFN and every other model open_clip builds.

Three name forms, as open_clip knows them: `hf-hub:ORG/REPO` (a repository
with `open_clip_config.json`), `open_clip:ARCH/PRETRAINED_TAG` (a built-in
architecture and one of its pretrained tags) and a local directory holding
`open_clip_config.json` with its weights (open_clip's `local-dir:`). Each
model keeps its own tokenizer and context length (CLIPA: 32), its own
evaluation transform (`preprocess_val`), its logit scale (stored as a log)
and its logit bias where it has one. This module only loads and encodes.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from explain.errors import HeatmapsUnavailable, ModelLoadError, first_line
from explain.models.base import (
    OFFLINE_ADVICE,
    TEXT_BATCH,
    EncoderModel,
    check_heatmap_size,
    folder_fingerprint,
    hub_reachable,
    quiet_loading,
    resolve_device,
    tower,
)
from explain.scoring import normalise

PREFIX = "open_clip:"
HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "open_clip_config.json"


def is_open_clip_name(name: str) -> bool:
    """Whether a model name is one of open_clip's forms rather than a transformers id or folder."""
    return name.startswith((PREFIX, HUB_PREFIX)) or (Path(name).is_dir() and (Path(name) / CONFIG_FILE).is_file())


class OpenClipImages:
    """open_clip's evaluation transform, called the way a transformers image processor is (picklable)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, images, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.transform(image) for image in images])}


class OpenClipModel(EncoderModel):
    """A model built by open_clip, with `encode_text` and `encode_image`."""

    backend = "open_clip"

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        transform: Callable,
        tokenizer: Callable,
        device: torch.device,
        fingerprint: str,
        notes=(),
    ):
        self.name, self.model, self.tokenizer, self.device = name, model.to(device).eval(), tokenizer, device
        self.dtype = next(model.parameters()).dtype
        self.fingerprint = fingerprint
        self.image_processor = OpenClipImages(transform)
        self.notes = list(notes)
        with torch.no_grad():
            self.logit_scale = float(model.logit_scale.detach().float().exp())  # stored as its log
            bias = getattr(model, "logit_bias", None)
            self.logit_bias = float(bias.detach().float()) if bias is not None else 0.0
            self.sigmoid_loss = bias is not None  # open_clip builds a logit bias only for its sigmoid-loss models
        self.max_text_length = int(getattr(tokenizer, "context_length", 77))
        self.dim = int(self.encode_texts(["a"]).shape[1])

    @tower
    def encode_texts(
        self, prompts: Sequence[str], batch_size: int = TEXT_BATCH, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Unit-norm text embeddings, in order. open_clip pads every prompt to the context length, so
        sorting by length would gain nothing here. # [n_prompts, dim]"""
        rows = []
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            tokens = self.tokenizer(batch).to(self.device)
            rows.append(self.model.encode_text(tokens).float().cpu().numpy())
            if progress is not None:
                progress(len(batch))
        return normalise(np.concatenate(rows)) if rows else np.zeros((0, getattr(self, "dim", 0)), np.float32)

    @tower
    def encode_pixels(self, pixels: dict[str, torch.Tensor]) -> np.ndarray:
        images = pixels["pixel_values"].to(self.device, self.dtype)
        return normalise(self.model.encode_image(images).float().cpu().numpy())

    @property
    def family(self) -> str:
        return f"open_clip {type(self.model.visual).__name__}"

    @property
    def map_method(self) -> str:
        try:
            self.check_heatmaps()
        except HeatmapsUnavailable:
            return ""
        if type(self.model.visual).__name__ == "ModifiedResNet":
            return "MaskCLIP's value path through the attention pool (Zhou et al., ECCV 2022)"
        if self.model.visual.pool_type == "avg":
            return "each location's feature of an average-pooled tower"
        return "ClearCLIP's last block (Lan et al., ECCV 2024)"

    def check_heatmaps(self, size: int | None = None) -> None:
        """Raise `HeatmapsUnavailable` with the tower's real reason when it has no heatmap recipe."""
        from open_clip.transformer import VisionTransformer

        check_heatmap_size(size)
        visual = self.model.visual
        prefix = f"maps of where a descriptor matches are not available for {self.name}: "
        if type(visual).__name__ == "ModifiedResNet":
            if size is not None:
                raise HeatmapsUnavailable(
                    f"a finer grid for {self.name} would need its attention pool's position embeddings "
                    "interpolated, which open_clip's ResNet does not offer"
                )
            return
        if not isinstance(visual, VisionTransformer):
            kind = type(visual).__name__
            why = {
                "TimmModel": "its tower is a timm model, whose blocks ClearCLIP's recipe here does not reach",
            }.get(kind, f"its tower is a {kind}, not a ViT with patch tokens")
            raise HeatmapsUnavailable(prefix + why)
        if visual.attn_pool is not None:
            raise HeatmapsUnavailable(prefix + "its ViT pools its tokens with an attention head, not its class token")
        if visual.pool_type not in ("tok", "avg"):
            raise HeatmapsUnavailable(prefix + f"its ViT pools by {visual.pool_type!r}, which no map recipe follows")
        if visual.pool_type == "tok" and visual.final_ln_after_pool:
            raise HeatmapsUnavailable(prefix + "its ViT normalises after pooling, which the recipe does not follow")
        if size is not None:
            raise HeatmapsUnavailable(
                f"a finer grid for {self.name} would need interpolated position embeddings, "
                "which open_clip's tower does not offer"
            )

    @tower
    def patch_embeddings(self, image, size: int | None = None) -> np.ndarray:
        """ClearCLIP on open_clip's own ViT tower (class-token pooling, no attention pooling); the same
        recipe as for transformers' CLIP. Timm towers (EVA-CLIP) and attention-pooled ones are refused.
        # [grid_h, grid_w, dim]"""
        self.check_heatmaps(size)
        visual = self.model.visual
        pixels = self.image_processor(images=[image])["pixel_values"].to(self.device, self.dtype)
        if type(visual).__name__ == "ModifiedResNet":
            return self._pool_values(visual, pixels)
        if visual.pool_type == "avg":
            return self._averaged_locations(visual, pixels)
        x = visual._embeds(pixels)  # [1, tokens, width]: patches, class token, positions, ln_pre
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        x = x if batch_first else x.transpose(0, 1)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(x)
        batch, tokens, width = h.shape
        heads = last.attn.num_heads
        w_q, _, w_v = last.attn.in_proj_weight.chunk(3)
        b_q, _, b_v = last.attn.in_proj_bias.chunk(3)
        q = torch.nn.functional.linear(h, w_q, b_q).view(batch, tokens, heads, width // heads).transpose(1, 2)
        v = torch.nn.functional.linear(h, w_v, b_v).view(batch, tokens, heads, width // heads).transpose(1, 2)
        weights = torch.softmax(q @ q.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
        mixed = last.ls_1(last.attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, tokens, width)))
        patches = visual.ln_post(mixed[0, 1:]) @ visual.proj  # [n_patches, dim]
        side = int(round((tokens - 1) ** 0.5))
        return normalise(patches.float().cpu().numpy()).reshape(side, side, -1)

    def _pool_values(self, visual, pixels: torch.Tensor) -> np.ndarray:
        """MaskCLIP's value path (Zhou et al., ECCV 2022) through a ResNet's attention pool (OpenAI's RN50):
        each location of the last feature map, with its position embedding, through the pool's value and
        output projections, skipping the query-key attention: the pool's output were its attention to fall
        on that location alone. # [grid_h, grid_w, dim]"""
        x = visual.stem(pixels)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        pool = visual.attnpool
        rows, cols = x.shape[2], x.shape[3]
        tokens = x[0].flatten(1).T + pool.positional_embedding[1:].to(x.dtype)  # [h*w, width]
        features = pool.c_proj(pool.v_proj(tokens))
        return normalise(features.float().cpu().numpy()).reshape(rows, cols, -1)

    def _averaged_locations(self, visual, pixels: torch.Tensor, normalised: bool = True) -> np.ndarray:
        """An average-pooled open_clip ViT (CLIPA): the pooled token is the mean of the tokens open_clip
        averages (all but the first, as its `_global_pool` does), so each of them, through the same affine
        map the pooled token goes through, is a location's feature. Where the final layer norm comes after
        the pool, its statistics are the pooled token's, which keeps the map affine: the locations' features
        then average exactly to the image's embedding before normalisation. # [grid_h, grid_w, dim]"""
        x = visual._embeds(pixels)
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = visual.transformer(x if batch_first else x.transpose(0, 1))
        tokens = (x if batch_first else x.transpose(0, 1))[0, 1:]  # [n, width]
        norm = visual.ln_post
        if visual.final_ln_after_pool:
            pooled = tokens.mean(dim=0)
            mean, var = pooled.mean(), pooled.var(unbiased=False)
            tokens = (tokens - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        else:
            tokens = norm(tokens)
        features = tokens @ visual.proj if visual.proj is not None else tokens
        side = int(round(features.shape[0] ** 0.5))
        if side * side != features.shape[0]:
            raise HeatmapsUnavailable(f"{self.name}: its {features.shape[0]} averaged tokens make no square grid")
        features = features.float().cpu().numpy()
        return (normalise(features) if normalised else features).reshape(side, side, -1)


def load_open_clip(name: str, device: str = "auto") -> OpenClipModel:
    """Load a model by one of open_clip's name forms; fp16 on CUDA, float32 elsewhere."""
    try:
        import open_clip
    except ImportError as error:  # open_clip needs torchvision, which not every torch build has beside it
        raise ModelLoadError(
            f"cannot load {name!r}: open_clip is not importable ({first_line(error)}); pip install open_clip_torch"
        ) from None
    target = resolve_device(device)
    precision = "fp16" if target.type == "cuda" else "fp32"
    notes: list[str] = []
    if name.startswith(PREFIX):
        arch, _, tag = name[len(PREFIX) :].partition("/")
        arch, tag = _checked_arch_and_tag(open_clip, arch, tag, notes)
        model_name, pretrained, fingerprint = arch, tag, f"{arch}/{tag}"
    elif name.startswith(HUB_PREFIX):
        model_name, pretrained, fingerprint = name, None, name
    else:
        folder = Path(name).resolve()
        _check_folder(folder, name)
        model_name, pretrained, fingerprint = f"local-dir:{folder}", None, folder_fingerprint(folder)
    online = Path(name).is_dir() or hub_reachable()
    try:
        # open_clip logs its failures at the root logger, beside the exception it raises.
        with _quiet_logging(), quiet_loading():
            model, _, transform = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, precision=precision, device=target
            )
            tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as error:  # open_clip raises RuntimeError, ValueError, OSError... for a bad name or no network
        raise ModelLoadError(f"cannot load model {name!r}: {first_line(error) if online else OFFLINE_ADVICE}") from None
    return OpenClipModel(name, model, transform, tokenizer, target, fingerprint, notes)


@contextlib.contextmanager
def _quiet_logging():
    """No log records while open_clip loads: what went wrong comes back as one line from the exception."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a folder


def _check_folder(folder: Path, name: str) -> None:
    """Refuse a folder without weights: open_clip would build the model with random weights and say so only in
    its log."""
    if not any(path.suffix in WEIGHT_SUFFIXES for path in folder.iterdir() if path.is_file()):
        raise ModelLoadError(
            f"cannot load model {name!r}: the folder holds {CONFIG_FILE} but no weights "
            "(open_clip_model.safetensors, open_clip_pytorch_model.bin or another .safetensors, .bin or .pth file)"
        )


def _checked_arch_and_tag(open_clip, arch: str, tag: str, notes: list[str]) -> tuple[str, str]:
    """The architecture and tag to load, or one line naming near matches. Weights trained with
    QuickGELU are loaded with the QuickGELU variant of their architecture, as their results need."""
    models = open_clip.list_models()
    if arch not in models:
        near = difflib.get_close_matches(arch, models, n=5, cutoff=0.5)
        raise ModelLoadError(
            f"open_clip has no architecture {arch!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        raise ModelLoadError(
            f"name a pretrained tag: open_clip:{arch}/TAG, where TAG is one of {', '.join(tags) or '(none)'}"
        )
    if tag not in tags:
        near = difflib.get_close_matches(tag, tags, n=5, cutoff=0.4) or tags[:8]
        raise ModelLoadError(f"open_clip has no pretrained tag {tag!r} for {arch}; its tags include {', '.join(near)}")
    config = open_clip.get_pretrained_cfg(arch, tag) or {}
    if config.get("quick_gelu") and not arch.endswith("-quickgelu") and f"{arch}-quickgelu" in models:
        notes.append(
            f"{arch}/{tag} was trained with QuickGELU; loading it as {arch}-quickgelu/{tag}, as the plain {arch} "
            "architecture would cost accuracy"
        )
        arch = f"{arch}-quickgelu"
    return arch, tag
