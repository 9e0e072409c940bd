"""The scoring maths of classification by description, on plain arrays.

Everything here takes L2-normalised embeddings as numpy arrays and returns
numpy arrays; there is no model, tokenizer, file or cache in this module, so
each function can be checked by hand on small made-up vectors.

    descriptor score = logit_scale * cos(image, prompt) + logit_bias
    class score      = mean of the class's descriptor scores
    probability      = softmax over class scores
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32. # [n, dim] -> [n, dim]"""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, np.finfo(np.float32).tiny)


def descriptor_scores(
    image_embeds: np.ndarray, prompt_embeds: np.ndarray, logit_scale: float, logit_bias: float = 0.0
) -> np.ndarray:
    """Scaled cosine similarity of every image with every prompt.

    image_embeds: [n_images, dim], prompt_embeds: [n_prompts, dim], both unit-norm.
    Returns [n_images, n_prompts], in the model's logit units (CLIP: 100 x cosine).
    """
    return (image_embeds @ prompt_embeds.T) * np.float32(logit_scale) + np.float32(logit_bias)


def class_scores(scores: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Mean descriptor score of each class, for prompts laid out class after class.

    scores: [n_images, n_prompts], counts: [n_classes] with sum(counts) == n_prompts
    and every count >= 1. Returns [n_images, n_classes] in float64, so that a
    mean over thousands of prompts loses nothing to rounding.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 1).any():
        raise ValueError("every class needs at least one prompt")
    if counts.sum() != scores.shape[-1]:
        raise ValueError(f"counts add up to {counts.sum()} prompts but scores have {scores.shape[-1]}")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.add.reduceat(np.asarray(scores, dtype=np.float64), starts, axis=-1) / counts


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along `axis`."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=axis, keepdims=True)
