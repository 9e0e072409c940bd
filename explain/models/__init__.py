"""Loading image-text models, by name, behind one interface.

`load_model` picks the backend from the name: open_clip's forms
(`hf-hub:ORG/REPO`, `open_clip:ARCH/TAG`, or a folder with
`open_clip_config.json`) go to `open_clip_backend`; plain `ORG/REPO` and a
folder with a transformers `config.json` go to `transformers_backend`.
Every model comes back as an `EncoderModel`; nothing above this package
knows which library built it.
"""

from explain.models.base import DEFAULT_MODEL, DEVICES, TEXT_BATCH, EncoderModel, configured_models, resolve_device
from explain.models.open_clip_backend import is_open_clip_name, load_open_clip
from explain.models.transformers_backend import _logit_scale_and_bias, load_transformers, wrap_model


def load_model(name: str = DEFAULT_MODEL, device: str = "auto") -> EncoderModel:
    """Load a model by any of the supported name forms; fp16 on CUDA, float32 elsewhere."""
    if is_open_clip_name(name):
        return load_open_clip(name, device)
    return load_transformers(name, device)


__all__ = [
    "DEFAULT_MODEL",
    "DEVICES",
    "TEXT_BATCH",
    "EncoderModel",
    "_logit_scale_and_bias",
    "configured_models",
    "load_model",
    "resolve_device",
    "wrap_model",
]
