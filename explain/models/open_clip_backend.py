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
import copy
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
    check_gradient_maps,
    check_heatmap_size,
    folder_fingerprint,
    hub_reachable,
    query_query_attention,
    quiet_loading,
    resolve_device,
    tower,
)
from explain.models.gradient_maps import gradient_features, last_block
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
        return normalise(self.image_features(images).float().cpu().numpy())

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip's image embedding before normalisation, one row per image (CoCa's "parallel" pooling
        keeps its single query as an axis of its own). # [n_images, dim]"""
        features = self.model.encode_image(pixels)
        return features.reshape(features.shape[0], -1)  # rows as encoded (a map's gradient passes add rows)

    @property
    def family(self) -> str:
        """open_clip and its tower's class; for a timm tower, the timm trunk's class too (open_clip TimmModel Eva)."""
        visual = self.model.visual
        trunk = getattr(visual, "trunk", None)
        return f"open_clip {type(visual).__name__}" + (f" {type(trunk).__name__}" if trunk is not None else "")

    @property
    def map_recipe(self) -> str | None:
        """Which of `MAP_RECIPES` fits this tower (see `tower_kind`)."""
        return TOWER_RECIPES[self.tower_kind][0]

    @property
    def tower_kind(self) -> str:
        """The kind of image tower, a key of `TOWER_RECIPES`: which of open_clip's towers (or which timm trunk
        inside its timm adapter), and how it pools."""
        visual = self.model.visual
        kind = type(visual).__name__
        if kind == "ModifiedResNet":
            return "resnet"
        if kind == "VisionTransformer":
            if visual.attn_pool is not None:
                contrastive = getattr(visual, "attn_pool_contrastive", None)
                return "vit-attention-pool" if contrastive is None or visual.attn_pool_type == "parallel" else "other"
            return {"tok": "vit-token", "avg": "vit-average"}.get(visual.pool_type, "other")
        if kind == "TimmModel":
            trunk = visual.trunk
            last = trunk.blocks[-1] if len(getattr(trunk, "blocks", ())) else None
            pool = getattr(trunk, "attn_pool", None)
            if pool is not None and hasattr(pool, "kv") and getattr(pool, "latent_len", 0) == 1:
                return "timm-attention-pool"
            pre_norm = last is not None and hasattr(last, "norm1") and "Post" not in type(last).__name__
            if pre_norm and hasattr(last, "attn") and getattr(trunk, "global_pool", "") == "token" and pool is None:
                return "timm-token"
        return "other"

    def map_region(self, picture) -> tuple[int, int, int, int]:
        """The part of `picture` the grid covers: all of it where open_clip squashes the image to a square
        (SigLIP's weights), else the centre square its shortest-side resize and crop keep."""
        config = getattr(self.model.visual, "preprocess_cfg", None) or {}
        if config.get("resize_mode") == "squash":
            return (0, 0, picture.width, picture.height)
        return super().map_region(picture)

    def check_heatmaps(self, size: int | None = None) -> None:
        """Raise `HeatmapsUnavailable` with the tower's real reason when it gives no map, or none at `size`."""
        check_heatmap_size(size)
        prefix = f"maps of where a descriptor matches are not available for {self.name}: "
        if self.map_recipe == "gradient":
            check_gradient_maps(self, self.model.visual, size, prefix)
        elif size is not None:
            raise HeatmapsUnavailable(
                f"a finer grid for {self.name} would need its tower's position embeddings interpolated, which "
                f"open_clip's {type(self.model.visual).__name__} does not offer"
            )
        elif self.tower_kind == "timm-token" and self.precision == "int8":
            raise HeatmapsUnavailable(
                prefix + "ClearCLIP on a timm tower reads its attention weights, which int8 packs; use another "
                "--precision"
            )

    @tower
    def patch_embeddings(self, image, size: int | None = None) -> np.ndarray:
        """Unit-norm features of each location of the image tower's grid, by the tower's recipe (see
        `location_features`); the gradient fallback's shares are left unnormalised. # [grid_h, grid_w, dim]"""
        self.check_heatmaps(size)
        pixels = self.image_processor(images=[image])["pixel_values"].to(self.device, self.dtype)
        if self.map_recipe == "gradient":
            return self._gradient_shares(pixels)
        return normalise_grid(self.location_features(pixels))

    def location_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Each location's feature before normalisation, by the recipe of this kind of tower. # [h, w, dim]"""
        method = getattr(self, TOWER_RECIPES[self.tower_kind][1])
        return method(self.model.visual, pixels)

    def _gradient_shares(self, pixels: torch.Tensor) -> np.ndarray:
        """The gradient fallback (`explain.models.gradient_maps`) at the tower's last block. # [h, w, dim]"""
        _, block = last_block(self.model.visual)
        return gradient_features(self.image_features, block, pixels)

    def _clearclip(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """ClearCLIP (Lan et al., ECCV 2024) on open_clip's own ViT: the last block's query-query attention, with
        no residual and no MLP; its patch tokens through the final layer norm and the projection."""
        x = visual._embeds(pixels)  # [1, tokens, width]: patches, class token, positions, ln_pre
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        x = x if batch_first else x.transpose(0, 1)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(x)
        w_q, _, w_v = last.attn.in_proj_weight.chunk(3)
        b_q, _, b_v = last.attn.in_proj_bias.chunk(3)
        q, v = torch.nn.functional.linear(h, w_q, b_q), torch.nn.functional.linear(h, w_v, b_v)
        mixed = last.ls_1(last.attn.out_proj(query_query_attention(q, v, last.attn.num_heads)))
        patches = visual.ln_post(mixed[0, 1:]) @ visual.proj  # [n_patches, dim]
        return square(patches, self.name)

    def _clearclip_timm(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """ClearCLIP through a timm ViT's blocks (EVA02's Eva, timm's VisionTransformer), pooled by its class
        token: the last block's own attention run with its keys made its queries (so rotary position
        embeddings, query norms and the attention's inner norm apply as the block applies them), scaled as the
        block scales it, with no residual and no MLP; the patch tokens then go through the trunk's final
        norms, its head and open_clip's projection, as the class token does."""
        trunk = visual.trunk
        last = trunk.blocks[-1]
        seen: dict = {}

        def capture(module, args, kwargs):
            seen["input"], seen["kwargs"] = args[0], kwargs

        handle = last.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            trunk.forward_features(pixels)
        finally:
            handle.remove()
        attention = queries_as_keys(last.attn)
        extra = {key: value for key, value in seen["kwargs"].items() if key == "rope"}
        mixed = attention(last.norm1(seen["input"]), **extra)
        if getattr(last, "gamma_1", None) is not None:  # Eva's layer scale
            mixed = last.gamma_1 * mixed
        elif hasattr(last, "ls1"):  # VisionTransformer's
            mixed = last.ls1(mixed)
        patches = mixed[0, trunk.num_prefix_tokens :]
        patches = trunk.head(trunk.head_drop(trunk.fc_norm(trunk.norm(patches))))
        return square(visual.head(patches), self.name)

    def _attention_pool_values(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """MaskCLIP's value path through open_clip's attentional pooler (CoCa): each patch token, after the
        pooler's key norm, through its value and output projections, skipping the query-key attention: the
        pooler's first query's output were its attention to fall on that patch alone; then the final layer
        norm and projection the first query's output goes through. With a contrastive pooler beside it
        ("parallel"), the tokens are normalised first and go through that pooler instead."""
        x = visual._embeds(pixels)
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = visual.transformer(x if batch_first else x.transpose(0, 1))
        x = (x if batch_first else x.transpose(0, 1))[0, 1:]  # [n_patches, width]
        contrastive = getattr(visual, "attn_pool_contrastive", None)
        pool = visual.attn_pool if contrastive is None else contrastive
        if contrastive is not None:
            x = visual.ln_post(x)
        attention = pool.attn
        width = attention.embed_dim
        if attention._qkv_same_embed_dim:
            weight = attention.in_proj_weight[2 * width :]
        else:
            weight = attention.v_proj_weight
        bias = attention.in_proj_bias[2 * width :] if attention.in_proj_bias is not None else None
        values = attention.out_proj(torch.nn.functional.linear(pool.ln_k(x), weight, bias))
        if contrastive is None:
            values = visual.ln_post(values)
        return square(values @ visual.proj if visual.proj is not None else values, self.name)

    def _timm_attention_pool_values(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """MaskCLIP's value path through a timm ViT's attention-pooling head (SigLIP's MAP head in open_clip):
        each patch token through the head's value and output projections and its own norm, MLP and residual,
        skipping the latent query's attention; then the trunk's head and open_clip's projection."""
        trunk = visual.trunk
        pool = trunk.attn_pool
        tokens = trunk.forward_features(pixels)[0]  # [tokens, width], after the final norm
        if pool.pos_embed is not None:
            tokens = tokens + pool.pos_embed.to(tokens.dtype)
        tokens = tokens[trunk.num_prefix_tokens :]
        width = tokens.shape[-1]
        bias = pool.kv.bias[width:] if pool.kv.bias is not None else None
        values = pool.proj(torch.nn.functional.linear(tokens, pool.kv.weight[width:], bias))
        if pool.mlp is not None:
            values = values + pool.mlp(pool.norm(values))
        values = trunk.head(trunk.head_drop(trunk.fc_norm(values)))
        return square(visual.head(values), self.name)

    def _resnet_pool_values(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """MaskCLIP's value path (Zhou et al., ECCV 2022) through a ResNet's attention pool (OpenAI's RN50):
        each location of the last feature map, with its position embedding, through the pool's value and
        output projections, skipping the query-key attention: the pool's output were its attention to fall
        on that location alone."""
        x = visual.stem(pixels)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        pool = visual.attnpool
        rows, cols = x.shape[2], x.shape[3]
        tokens = x[0].flatten(1).T + pool.positional_embedding[1:].to(x.dtype)  # [h*w, width]
        return pool.c_proj(pool.v_proj(tokens)).reshape(rows, cols, -1)

    def _averaged_locations(self, visual, pixels: torch.Tensor) -> torch.Tensor:
        """An average-pooled open_clip ViT (CLIPA): the pooled token is the mean of the tokens open_clip
        averages (all but the first, as its `_global_pool` does), so each of them, through the same affine
        map the pooled token goes through, is a location's feature. Where the final layer norm comes after
        the pool, its statistics are the pooled token's, which keeps the map affine: the locations' features
        then average exactly to the image's embedding before normalisation."""
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
        return square(tokens @ visual.proj if visual.proj is not None else tokens, self.name)


TOWER_RECIPES = {  # open_clip's kinds of image tower: (the recipe of `MAP_RECIPES`, OpenClipModel's method for it)
    "vit-token": ("clearclip", "_clearclip"),
    "timm-token": ("clearclip", "_clearclip_timm"),
    "vit-average": ("average-pool", "_averaged_locations"),
    "vit-attention-pool": ("attention-pool-values", "_attention_pool_values"),
    "timm-attention-pool": ("attention-pool-values", "_timm_attention_pool_values"),
    "resnet": ("attention-pool-values", "_resnet_pool_values"),
    "other": ("gradient", "_gradient_shares"),
}


def square(features: torch.Tensor, name: str) -> torch.Tensor:
    """A location's features, row by row, on their square grid. # [n, dim] -> [side, side, dim]"""
    side = int(round(features.shape[0] ** 0.5))
    if side * side != features.shape[0]:
        raise HeatmapsUnavailable(f"{name}: its {features.shape[0]} locations make no square grid")
    return features.reshape(side, side, -1)


def normalise_grid(features: torch.Tensor) -> np.ndarray:
    """Unit-norm float32 features on their grid. # [h, w, dim]"""
    return normalise(features.float().cpu().numpy().reshape(-1, features.shape[-1])).reshape(features.shape)


def queries_as_keys(attention: torch.nn.Module) -> torch.nn.Module:
    """A copy of a timm attention module whose keys are its queries (weights, bias and norm), so that its own
    forward computes softmax(q qᵀ) v: ClearCLIP's query-query attention, rotary embeddings and all."""
    clone = copy.deepcopy(attention)
    if getattr(clone, "qkv", None) is not None:
        weight = getattr(clone.qkv, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise HeatmapsUnavailable("the attention's weights are packed (int8); use another --precision")
        width = weight.shape[0] // 3
        with torch.no_grad():
            weight[width : 2 * width] = weight[:width]
            if getattr(clone, "q_bias", None) is not None:  # Eva keeps its biases apart (no key bias: zeros)
                clone.k_bias.copy_(clone.q_bias)
            elif clone.qkv.bias is not None:
                clone.qkv.bias[width : 2 * width] = clone.qkv.bias[:width]
    else:
        clone.k_proj = clone.q_proj
    clone.k_norm = clone.q_norm
    return clone


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
