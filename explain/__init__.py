"""Descry's engine: explainable zero-shot classification by description.

Public surface: load a CLIP-family model, build an `Explainer` around it (or
an `ExplainerPool` of several, each loaded on first use), classify images
into ranked, explained `Classification` records, and map where each
descriptor matches (`Heatmaps`). The CLI, the web app and dataset
evaluation all call these same names.
"""

from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError, HeatmapsUnavailable, ImageError, ModelLoadError
from explain.images import open_image
from explain.models import DEFAULT_MODEL, EncoderModel, load_model, wrap_model
from explain.pool import ExplainerPool
from explain.results import Classification, ClassScore, Contrast, DescriptorHeatmap, DescriptorScore, Heatmaps
from explain.version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "ClassScore",
    "Classification",
    "Contrast",
    "DescriptorHeatmap",
    "DescriptorScore",
    "EmbeddingStore",
    "EncoderModel",
    "ExplainError",
    "Explainer",
    "ExplainerPool",
    "HeatmapsUnavailable",
    "Heatmaps",
    "ImageError",
    "ModelLoadError",
    "load_model",
    "open_image",
    "wrap_model",
    "__version__",
]
