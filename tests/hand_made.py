"""A hand-made stand-in for a model: chosen 2-d directions per prompt, so every score can be checked on paper."""

import numpy as np

from explain.scoring import normalise


class HandMadeEncoder:
    """Stands in for EncoderModel: each prompt has a chosen 2-d direction; every image is [1, 0]."""

    name = "hand-made"
    key = "hand-made|float32"
    dim = 2

    def __init__(self, directions, logit_scale=10.0, logit_bias=0.0):
        self.directions = directions
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.text_calls = []

    def encode_texts(self, prompts):
        self.text_calls.append(list(prompts))
        return normalise(np.array([self.directions[p] for p in prompts], dtype=np.float32))

    def encode_images(self, images):
        return normalise(np.array([[1.0, 0.0]] * len(images), dtype=np.float32))


DIRECTIONS = {
    "tree frog, which has protruding eyes": [1.0, 0.0],  # cos 1.0 -> 10
    "tree frog, which is a bright green colour": [0.6, 0.8],  # cos 0.6 -> 6
    "tailed frog, which has tail-like extension": [0.0, 1.0],  # cos 0 -> 0
    "a photo of a tree frog.": [0.8, 0.6],  # baseline 8
    "a photo of a tailed frog.": [0.6, 0.8],  # baseline 6
    "a photo of a newt.": [-1.0, 0.0],  # fallback and baseline -10
}
FROGS = {"tailed frog": ["tail-like extension"], "tree frog": ["protruding eyes", "a bright green colour"]}
