"""The map of last resort: gradient × activation at the input of an image tower's last block.

For a tower that none of the training-free recipes follows (a timm ConvNeXt,
an average-pooled timm ViT, ...), a location's share of a descriptor's score
is, to first order, the gradient of the score with respect to that location's
activations at the input of the tower's last block, times those activations,
summed over channels (gradient × input, Shrikumar et al., 2016). It is the
plainer of the two fallbacks the field uses; Grad-ECLIP (Zhao et al., ICML
2024) adds attention weights and rectification, which are not built here.
The score is scale · cos(image, text), linear in the unit text embedding t, so
location l's share is scale · t · M[l], where M[l] = Σ_c (∂u/∂a_lc) a_lc and u
is the image's unit embedding: one vector per location serves every
descriptor, as the other recipes' features do. M is found by forward-mode
differentiation, one batch row per location, or where a tower has an
operation without a forward derivative, by backward passes batched over the
embedding's dimensions. The shares are in logits without the bias; they are
not the descriptor's bar at that location. This module knows towers only
through the block it is handed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from explain.errors import HeatmapsUnavailable

METHOD = "gradient × activation at the last block's input (gradient × input, Shrikumar et al., 2016)"
UNITS = "each location's first-order share of scale · cosine (gradient × activation), in logits without the bias"
BLOCK_LISTS = re.compile(r"(blocks|resblocks|layers|layer\d*|stages)$")  # how towers name their lists of blocks
CHUNK = 64  # embedding dimensions per batched backward pass
NOT_ON_THE_PATH = "the last block found in its tower is not on the way to the image embedding"


def last_block(tower: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The last block of the last list of blocks in `tower` (its dotted path and the module): for a timm
    ConvNeXt `stages.3.blocks.2`, for a ViT `blocks.11` or `encoder.layers.11`."""
    found = None
    for name, module in tower.named_modules():
        if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)) and len(module):
            if BLOCK_LISTS.search(name.rsplit(".", 1)[-1]):
                found = (f"{name}.{len(module) - 1}", module[-1])
    if found is None:
        raise HeatmapsUnavailable(f"its {type(tower).__name__} has no list of blocks to take gradients at")
    return found


def gradient_features(
    embed: Callable[[torch.Tensor], torch.Tensor], block: torch.nn.Module, pixels: torch.Tensor, chunk: int = CHUNK
) -> np.ndarray:
    """M, one vector per location of `block`'s input grid, such that scale · t · M[l] is location l's
    gradient × activation share of the score of a unit text embedding t. `embed(pixels)` is the tower's
    image embedding (any norm). # [grid_h, grid_w, dim]

    M[l] is the derivative of the unit embedding along the activations of location l alone, so forward-mode
    differentiation gives it with one pass of the tower's tail per location, batched (49 rows for a 7×7
    grid); a tower with an operation torch cannot differentiate forward falls back to reverse mode, one row
    per embedding dimension (512 or more)."""
    with torch.inference_mode(False):
        pixels = pixels.clone()
        try:
            return _forward_mode(embed, block, pixels)
        except (RuntimeError, NotImplementedError):  # an operation without a forward-mode derivative
            return reverse_mode(embed, block, pixels, chunk)


LOCATIONS_PER_PASS = 256  # rows of the tail's batch in forward mode


def _forward_mode(embed, block, pixels: torch.Tensor) -> np.ndarray:
    import torch.autograd.forward_ad as forward_ad
    from torch.nn.attention import SDPBackend, sdpa_kernel

    state: dict = {"start": 0}

    def dual(module, args, kwargs):  # the block's input, once per location of this pass, each moved along itself
        activation = args[0].detach()
        if activation.shape[0] != 1:
            raise HeatmapsUnavailable(f"the block's input has {activation.shape[0]} rows where one image gave one")
        places = _locations(activation)  # [n_locations] index tuples into the activation without its batch axis
        state["grid"], state["total"] = _grid(activation), len(places)
        chosen = places[state["start"] : state["start"] + LOCATIONS_PER_PASS]
        tangent = torch.zeros(len(chosen), *activation.shape[1:], dtype=activation.dtype)
        for row, place in enumerate(chosen):
            tangent[(row, *place)] = activation[(0, *place)]
        primal = activation.expand(len(chosen), *activation.shape[1:]).contiguous()
        return (forward_ad.make_dual(primal, tangent), *args[1:]), kwargs

    handle = block.register_forward_pre_hook(dual, with_kwargs=True)
    rows = []
    try:
        # Fused attention kernels have no forward derivative; the math kernel is plain operations that do.
        with torch.no_grad(), forward_ad.dual_level(), sdpa_kernel([SDPBackend.MATH]):
            while state["start"] < state.get("total", 1):
                unit = torch.nn.functional.normalize(embed(pixels).float(), dim=-1)
                if "total" not in state:
                    raise HeatmapsUnavailable(NOT_ON_THE_PATH)
                moved = forward_ad.unpack_dual(unit).tangent
                if moved is None:
                    raise RuntimeError("the embedding carries no forward derivative")
                rows.append(moved.detach())
                state["start"] += LOCATIONS_PER_PASS
    finally:
        handle.remove()
    return torch.cat(rows).reshape(*state["grid"], -1).cpu().numpy().astype(np.float32)


def _locations(activation: torch.Tensor) -> list[tuple]:
    """Where each location of the grid sits in an activation of one image, row by row: (token, slice) for
    tokens [1, n, width] (prefix tokens skipped), (slice, i, j) for feature maps [1, width, h, w]."""
    every = slice(None)
    if activation.dim() == 4:
        return [(every, i, j) for i in range(activation.shape[2]) for j in range(activation.shape[3])]
    rows, cols = _grid(activation)
    prefix = activation.shape[1] - rows * cols
    return [(prefix + k, every) for k in range(rows * cols)]


def _grid(activation: torch.Tensor) -> tuple[int, int]:
    """The location grid of an activation of one image (see `_locations`)."""
    if activation.dim() == 4:
        return activation.shape[2], activation.shape[3]
    if activation.dim() != 3:
        raise HeatmapsUnavailable(f"the last block's input has {activation.dim()} dimensions, not tokens or a map")
    side = int(activation.shape[1] ** 0.5)
    while (side + 1) ** 2 <= activation.shape[1]:
        side += 1
    return side, side


def reverse_mode(embed, block, pixels: torch.Tensor, chunk: int = CHUNK) -> np.ndarray:
    """The same M by backward passes, one batch row per embedding dimension: the block's input repeated along
    the batch, row j carrying dimension j's gradient. # [grid_h, grid_w, dim]"""
    state: dict = {}

    def repeat(module, args, kwargs):  # the block's input, once per dimension of this pass
        activation = args[0].detach()
        if activation.shape[0] != 1:
            raise HeatmapsUnavailable(f"the block's input has {activation.shape[0]} rows where one image gave one")
        state["activation"] = activation
        state["input"] = activation.expand(state["rows"], *activation.shape[1:]).clone().requires_grad_(True)
        return (state["input"], *args[1:]), kwargs

    handle = block.register_forward_pre_hook(repeat, with_kwargs=True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            state["rows"] = 1
            dim = embed(pixels).shape[-1]
            if "input" not in state:
                raise HeatmapsUnavailable(NOT_ON_THE_PATH)
            shares = []
            for start in range(0, dim, chunk):
                dims = torch.arange(start, min(start + chunk, dim))
                state["rows"] = len(dims)
                unit = torch.nn.functional.normalize(embed(pixels).float(), dim=-1)  # [rows, dim]
                (grad,) = torch.autograd.grad(unit[torch.arange(len(dims)), dims].sum(), state["input"])
                shares.append(_per_location(grad.float() * state["activation"].float()))  # [rows, locations...]
    finally:
        handle.remove()
    found = torch.cat(shares).movedim(0, -1)  # [grid_h, grid_w, dim]
    return found.detach().cpu().numpy().astype(np.float32)


def _per_location(product: torch.Tensor) -> torch.Tensor:
    """Gradient × activation summed over channels, on the location grid, for each row of the batch:
    tokens [rows, n, width] (prefix tokens, such as a class token, dropped) or feature maps [rows, width, h, w].
    # [rows, grid_h, grid_w]"""
    rows, cols = _grid(product[:1])
    if product.dim() == 4:
        return product.sum(dim=1)
    return product[:, product.shape[1] - rows * cols :].sum(dim=-1).reshape(-1, rows, cols)
