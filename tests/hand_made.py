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

    def encode_texts(self, prompts, progress=None):
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


def classification_at_scale(scores: dict[str, dict[str, float]], baseline: dict[str, float]):
    """A Classification built from given descriptor scores, as real CLIP gives them (20 to 30 logits).

    Class scores are the means, probabilities the softmax, both sorted as the engine sorts them.
    """
    from explain.results import Classification, ClassScore, DescriptorScore
    from explain.scoring import softmax

    names = list(scores)
    means = np.array([np.mean(list(scores[n].values())) for n in names])
    probabilities = softmax(means)
    predictions = []
    for name, mean, probability in zip(names, means, probabilities, strict=True):
        entries = [DescriptorScore(d, f"{name}, which has {d}", float(s)) for d, s in scores[name].items()]
        entries.sort(key=lambda d: d.score, reverse=True)
        predictions.append(ClassScore(name, float(mean), float(probability), tuple(entries)))
    base = np.array([baseline[n] for n in names])
    alone = [ClassScore(n, float(s), float(p)) for n, s, p in zip(names, base, softmax(base), strict=True)]
    return Classification(
        "frog.jpg",
        "test",
        tuple(sorted(predictions, key=lambda r: r.score, reverse=True)),
        tuple(sorted(alone, key=lambda r: r.score, reverse=True)),
    )


# The seed article's tree frog photo with real CLIP (ViT-B/32): descriptor scores in logits.
SEED_FROGS = {
    "tree frog": {
        "protruding eyes": 25.54,
        "bright green colour": 22.68,
        "sticky toe pads": 21.39,
        "often found on leaves": 25.90,
    },
    "tailed frog": {
        "tiny eyes": 24.09,
        "a flattened body": 22.40,
        "a short tail-like extension": 21.28,
        "found in fast streams": 21.01,
    },
}
SEED_BASELINE = {"tree frog": 24.10, "tailed frog": 24.92}


def twenty_classes(seed: int = 0):
    """About twenty classes of six descriptors with scores drawn between 22 and 26, as real CLIP spreads them."""
    rng = np.random.default_rng(seed)
    scores = {f"class {k}": {f"feature {k}.{j}": float(rng.uniform(22, 26)) for j in range(6)} for k in range(20)}
    baseline = {name: float(rng.uniform(22, 26)) for name in scores}
    return classification_at_scale(scores, baseline)
