"""The transformers backend: any checkpoint with `get_text_features` and `get_image_features`.

CLIP, MetaCLIP, AltCLIP, ALIGN, SigLIP and SigLIP 2, by hub id or a
directory saved with `save_pretrained`. Each keeps its own logit scale
(ALIGN's is 1/temperature) and bias, tokenizer and processor; SigLIP's text
is padded to its full length, as it was trained. This module only loads and
encodes; it does no caching and no scoring.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class TransformersModel(EncoderModel):
    """A transformers checkpoint with `get_text_features` and `get_image_features`."""

    name: str
    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    logit_scale: float = field(init=False)
    logit_bias: float = field(init=False)
    notes: list[str] = field(default_factory=list)
    backend = "transformers"

    def __post_init__(self) -> None:
        self.logit_scale, self.logit_bias = logit_scale_and_bias(self.model)
        self.sigmoid_loss = hasattr(self.model, "logit_bias")  # SigLIP and SigLIP 2 learn a bias for their sigmoid
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor
        self._text_args = set(inspect.signature(self.model.get_text_features).parameters)
        self._image_args = set(inspect.signature(self.model.get_image_features).parameters)
        # SigLIP was trained on text padded to a fixed length and pools the last
        # token, so its embeddings depend on the padding; the pipeline pads to 64.
        self._pad_to_max = "siglip" in self.model.config.model_type
        self.max_text_length = _max_text_length(self.tokenizer, self.model.config)

    def text_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenised prompts on the model's device, with only the arguments the model takes."""
        padding = "max_length" if self._pad_to_max else True
        tokens = self.tokenizer(
            list(prompts), padding=padding, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in tokens.items() if k in self._text_args}

    @tower
    def encode_texts(
        self, prompts: Sequence[str], batch_size: int = TEXT_BATCH, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Unit-norm text embeddings, in the order given. # [n_prompts, dim]

        Prompts are tokenised once, sorted by length and batched, so that each
        batch is padded only to its own longest prompt (the DCLIP ImageNet
        prompts run from 7 to 36 tokens); the rows are put back in order. The
        embeddings equal those of unsorted batches to float rounding.
        `progress(n)` is called after each batch with the prompts just encoded.
        """
        if not prompts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(list(prompts), truncation=True, max_length=self.max_text_length)
        order = sorted(range(len(prompts)), key=lambda i: len(tokens["input_ids"][i]))
        padding = "max_length" if self._pad_to_max else "longest"
        embeddings = np.zeros((len(prompts), self.dim), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            fixed = {"max_length": self.max_text_length} if self._pad_to_max else {}
            batch = self.tokenizer.pad(
                {key: [values[i] for i in rows] for key, values in tokens.items()},
                padding=padding,
                return_tensors="pt",
                **fixed,
            )
            inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._text_args}
            embeddings[rows] = _pooled(self.model.get_text_features(**inputs))
            if progress is not None:
                progress(len(rows))
        return normalise(embeddings)

    @tower
    def encode_pixels(self, pixels: dict[str, torch.Tensor]) -> np.ndarray:
        """Unit-norm embeddings of already-preprocessed images. # [n_images, dim]"""
        inputs = {
            k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in pixels.items()
            if k in self._image_args
        }
        return normalise(_pooled(self.model.get_image_features(**inputs)))

    @property
    def family(self) -> str:
        return str(self.model.config.model_type)

    @property
    def map_recipe(self) -> str | None:
        """Which of `MAP_RECIPES` fits this tower: a training-free one where the tower's shape is known,
        else the gradient fallback."""
        tower = getattr(self.model, "vision_model", None)
        if tower is None:
            return None
        if all(hasattr(tower, part) for part in ("embeddings", "pre_layrnorm", "encoder", "post_layernorm")):
            if hasattr(self.model, "visual_projection"):
                return "clearclip"
        head = getattr(tower, "head", None)
        if isinstance(getattr(head, "attention", None), torch.nn.MultiheadAttention) and hasattr(head, "mlp"):
            return "attention-pool-values"
        if self.family == "align" and hasattr(tower, "pooler"):
            return "average-pool"
        return "gradient"

    def map_region(self, picture) -> tuple[int, int, int, int]:
        """SigLIP's processors resize the whole image (no crop): the grid covers all of it."""
        if self.map_recipe == "attention-pool-values":
            return (0, 0, picture.width, picture.height)
        return super().map_region(picture)

    @tower
    def patch_embeddings(self, image, size: int | None = None) -> np.ndarray:
        """Unit-norm features of each location of the image tower's grid, by the tower's recipe. # [h, w, dim]"""
        self.check_heatmaps(size)
        if self.map_recipe == "attention-pool-values":
            return self._pooled_values(image, size)
        if self.map_recipe == "average-pool":
            return self._location_features(image, size)
        if self.map_recipe == "gradient":
            return self._gradient_shares(image)
        return self._clearclip(image, size)

    def _gradient_shares(self, image) -> np.ndarray:
        """The gradient fallback (`explain.models.gradient_maps`) at the vision tower's last block. # [h, w, dim]"""
        _, block = last_block(self.model.vision_model)
        pixels = self.pixels_at(image)

        def embed(batch: torch.Tensor) -> torch.Tensor:
            output = self.model.get_image_features(pixel_values=batch)
            return output.pooler_output if hasattr(output, "pooler_output") else output

        return gradient_features(embed, block, pixels)

    def _pooled_values(self, image, size: int | None) -> np.ndarray:
        """MaskCLIP's value path (Zhou et al., ECCV 2022) through an attention-pooling head (SigLIP's MAP head):
        each location's final token goes through the head's value and output projections, then the head's
        own layer norm, MLP and residual, skipping the probe's query-key attention. It is exactly the head's
        output were its attention to fall on that one location. # [h, w, dim]"""
        tower = self.model.vision_model
        inputs = self.map_inputs(image, size)
        hidden = tower(**inputs).last_hidden_state[0]  # [tokens, width], after the final layer norm
        if "pixel_attention_mask" in inputs:  # SigLIP 2: the patches of this image, then padding
            hidden = hidden[inputs["pixel_attention_mask"][0].bool()]
            rows, cols = (int(v) for v in inputs["spatial_shapes"][0])
        else:
            rows = cols = int(round(hidden.shape[0] ** 0.5))
        head = tower.head
        width = hidden.shape[-1]
        values = hidden @ head.attention.in_proj_weight[2 * width :].T + head.attention.in_proj_bias[2 * width :]
        pooled = head.attention.out_proj(values)
        pooled = pooled + head.mlp(head.layernorm(pooled))
        return normalise(pooled.float().cpu().numpy()).reshape(rows, cols, -1)

    def _location_features(self, image, size: int | None) -> np.ndarray:
        """An average-pooled convolutional tower (ALIGN's EfficientNet): the pooled embedding is the mean of
        the last feature map's locations, so each location's own feature, scored with the same text, is
        where the descriptor matches; the features average back to the image's embedding before it is
        normalised. # [h, w, dim]"""
        features = self.model.vision_model(**self.map_inputs(image, size)).last_hidden_state[0]  # [dim, h, w]
        return normalise(features.permute(1, 2, 0).float().cpu().numpy())

    def map_inputs(self, image, size: int | None = None) -> dict[str, torch.Tensor]:
        """The vision tower's inputs for one image, at `size` pixels square where the recipe allows it."""
        if self.map_recipe == "clearclip":
            return {"pixel_values": self.pixels_at(image, size)}
        if self.family == "siglip2":
            inputs = self.image_processor(images=[image], return_tensors="pt")
            return {k: v.to(self.device) for k, v in inputs.items()}
        options = {"size": {"height": size, "width": size}} if size else {}
        if size and self.family == "align":
            options["crop_size"] = {"height": size, "width": size}
        pixels = self.image_processor(images=[image], return_tensors="pt", **options)["pixel_values"]
        inputs = {"pixel_values": pixels.to(self.device, self.dtype)}
        if size and self.family != "align":
            inputs["interpolate_pos_encoding"] = True
        return inputs

    def _clearclip(self, image, size: int | None = None) -> np.ndarray:
        """ClearCLIP (Lan et al., ECCV 2024): the last block with query-query attention, no residual, no MLP.

        The input of the vision tower's last block goes through that block's
        first layer norm and its query and value projections; each patch
        attends by softmax(q qᵀ / √d_head) to the values, then the block's
        output projection. Its patch tokens (not the class token) go through
        the tower's final layer norm and the visual projection, and are
        normalised. `size` > the model's input (e.g. 448) interpolates the
        position embeddings for a finer grid. # [grid_h, grid_w, dim]
        """
        tower = self.model.vision_model
        pixels = self.pixels_at(image, size)
        x = tower.pre_layrnorm(tower.embeddings(pixels, interpolate_pos_encoding=size is not None))
        for layer in tower.encoder.layers[:-1]:
            x = layer(x, attention_mask=None)
        last = tower.encoder.layers[-1]
        attention = last.self_attn
        h = last.layer_norm1(x)
        mixed = attention.out_proj(query_query_attention(attention.q_proj(h), attention.v_proj(h), attention.num_heads))
        patches = self.model.visual_projection(tower.post_layernorm(mixed[0, 1:]))  # [n_patches, dim]
        side = int(round((h.shape[1] - 1) ** 0.5))
        return normalise(patches.float().cpu().numpy()).reshape(side, side, -1)

    def check_heatmaps(self, size: int | None = None) -> None:
        """Raise `HeatmapsUnavailable` with the reason when this model's tower has no heatmap recipe, or none
        at `size`."""
        check_heatmap_size(size)
        prefix = f"maps of where a descriptor matches are not available for {self.name}: "
        if self.map_recipe is None:
            raise HeatmapsUnavailable(prefix + f"{self.family} has no image tower with a map recipe here")
        if self.map_recipe == "gradient":
            check_gradient_maps(self, self.model.vision_model, size, prefix)
        if size and self.family == "siglip2":
            raise HeatmapsUnavailable(
                prefix + "SigLIP 2 sees each image at its own aspect in a fixed number of patches, so a finer "
                "grid would need its processor's max_num_patches raised, which --heatmap-size does not do"
            )

    def pixels_at(self, image, size: int | None = None) -> torch.Tensor:
        """The processor's tensor for one image, at the model's input size or `size` pixels square."""
        options = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}} if size else {}
        pixels = self.image_processor(images=[image], return_tensors="pt", **options)["pixel_values"]
        return pixels.to(self.device, self.dtype)

    @property
    def dim(self) -> int:
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)


def load_transformers(name: str, device: str = "auto") -> TransformersModel:
    """Load a checkpoint by hub id or directory; fp16 on CUDA, float32 elsewhere."""
    from transformers import AutoModel, AutoProcessor

    target = resolve_device(device)
    dtype = torch.float16 if target.type == "cuda" else torch.float32
    online = Path(name).is_dir() or hub_reachable()
    try:
        with quiet_loading():
            model = AutoModel.from_pretrained(name, dtype=dtype)
            processor = AutoProcessor.from_pretrained(name)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... for a bad name
        reason = first_line(error) if online else OFFLINE_ADVICE
        raise ModelLoadError(f"cannot load model {name!r}: {reason}") from None
    return wrap_model(model, processor, name, target)


def wrap_model(
    model: torch.nn.Module, processor: object, name: str, device: torch.device | str = "cpu"
) -> TransformersModel:
    """Wrap an already-built model and processor (used by `load_model`, tests and benchmarks)."""
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ModelLoadError(
            f"{name!r} is a {type(model).__name__}, not an image-text model with text and image encoders"
        )
    if not (hasattr(processor, "tokenizer") and hasattr(processor, "image_processor")):
        raise ModelLoadError(f"{name!r} has no processor with both a tokenizer and an image processor")
    device = torch.device(device)
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    return TransformersModel(name, model, processor, device, dtype, _fingerprint(name, model))


def _pooled(output) -> np.ndarray:
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    tensor = output.pooler_output if hasattr(output, "pooler_output") else output
    return tensor.float().cpu().numpy()


def logit_scale_and_bias(model: torch.nn.Module) -> tuple[float, float]:
    """The factor and offset that turn a cosine into this model's logit."""
    if hasattr(model, "logit_scale"):
        scale = float(model.logit_scale.detach().float().exp())
    elif hasattr(model, "temperature"):  # ALIGN divides by a learned temperature instead
        scale = 1.0 / float(model.temperature.detach().float())
    else:
        raise ModelLoadError(f"{type(model).__name__} has neither a logit scale nor a temperature")
    bias = float(model.logit_bias.detach().float()) if hasattr(model, "logit_bias") else 0.0
    return scale, bias


def _max_text_length(tokenizer, config) -> int:
    """The longest token sequence the text encoder accepts."""
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 100_000:  # tokenizers without a limit report a huge sentinel
        return int(limit)
    return int(config.text_config.max_position_embeddings)


def _fingerprint(name: str, model: torch.nn.Module) -> str:
    """Names the exact weights, so disk caches never mix two versions of a checkpoint."""
    if Path(name).is_dir():
        return folder_fingerprint(name)
    revision = getattr(model.config, "_commit_hash", None)
    if revision:
        return f"hub:{name}@{revision}"
    # A model built in memory: hash its weights, which is slow but only happens in tests and benchmarks.
    digest = hashlib.blake2b(digest_size=12)
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().reshape(-1)[:1024].contiguous().view(torch.uint8).numpy().tobytes())
    return f"mem:{name}@{digest.hexdigest()}"
