"""Descry's engine: explainable zero-shot classification by description.

Public surface: load a CLIP-family model, build an `Explainer` around it, and
classify images into ranked, explained `Classification` records. The CLI,
the web app and dataset evaluation all call these same names.
"""

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError, ImageError, ModelLoadError
from explain.images import open_image
from explain.models import DEFAULT_MODEL, EncoderModel, load_model, wrap_model
from explain.results import Classification, ClassScore, Contrast, DescriptorScore

__all__ = [
    "DEFAULT_MODEL",
    "ClassScore",
    "Classification",
    "Contrast",
    "DescriptorScore",
    "EmbeddingStore",
    "EncoderModel",
    "ExplainError",
    "Explainer",
    "ImageError",
    "ModelLoadError",
    "load_model",
    "open_image",
    "wrap_model",
]
