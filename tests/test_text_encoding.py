"""Length-bucketed text encoding: the same embeddings as plain batches, for every family; progress on long encodes."""

import numpy as np
import torch

from explain import Explainer, load_model
from explain.scoring import normalise
from tests.conftest import FROGS, random_image

PROMPTS = [
    "a photo of a tree frog.",
    "tree frog, which has protruding eyes",
    "tailed frog, which is a short tail-like extension of the male's cloaca used to fast-flowing mountain streams",
    "bullfrog, which has large round eardrums behind the eyes",
    "newt",
    "axolotl, which has feathery external gills on both sides of a wide, flat head and a long tail fin",
    "caecilian, which has no legs",
]


def unsorted(encoder, prompts, batch_size):
    """The plain way: batches in the order given, each padded to its own longest prompt."""
    with torch.inference_mode():
        rows = [
            encoder.model.get_text_features(**encoder.text_inputs(prompts[i : i + batch_size]))
            for i in range(0, len(prompts), batch_size)
        ]
    return normalise(np.concatenate([r.pooler_output.float().numpy() for r in rows]))


def test_sorted_batches_equal_plain_batches_for_every_family(family):
    encoder = load_model(str(family), device="cpu")
    prompts = PROMPTS * 5  # 35 prompts of mixed lengths
    for batch_size in (4, 64):
        np.testing.assert_allclose(
            encoder.encode_texts(prompts, batch_size=batch_size), unsorted(encoder, prompts, batch_size), atol=1e-6
        )


def test_progress_counts_every_prompt(clip):
    counted = []
    clip.encode_texts(PROMPTS * 10, batch_size=16, progress=counted.append)
    assert sum(counted) == 70 and len(counted) == 5


def test_the_explainer_reports_long_encodes_only(clip):
    calls = []

    def on_encode(total):
        calls.append(total)
        return lambda n: None

    explainer = Explainer(clip)
    explainer.classify(random_image(0), FROGS, on_encode=on_encode)
    assert calls == [len(FROGS) + sum(len(v) for v in FROGS.values())]  # told up front how many
    explainer.classify(random_image(1), FROGS, on_encode=on_encode)
    assert len(calls) == 1  # nothing new to encode: not told at all
