"""Descriptors: the per-class visual features that the scorer explains with.

Public surface: reading descriptor files, choosing classes from them, and
building the prompts CLIP reads. Generation with an LLM lives elsewhere.
"""

from descriptors.names import descriptors_of, find_key, normalise_name
from descriptors.prompts import (
    DEFAULT_TEMPLATE,
    DESCRY,
    PROMPT_STYLES,
    PromptSet,
    PromptStyle,
    build_prompts,
    class_label,
    prompt_for,
    template_prompt,
    template_prompts,
)
from descriptors.store import (
    DescriptorError,
    Descriptors,
    load_descriptors,
    parse_class_list,
    parse_descriptors,
    require_distinct,
    select_classes,
)
from descriptors.validate import Problem, check_descriptors, check_structure

__all__ = [
    "DEFAULT_TEMPLATE",
    "DESCRY",
    "PROMPT_STYLES",
    "DescriptorError",
    "Descriptors",
    "Problem",
    "PromptSet",
    "PromptStyle",
    "build_prompts",
    "check_descriptors",
    "check_structure",
    "class_label",
    "descriptors_of",
    "find_key",
    "load_descriptors",
    "normalise_name",
    "parse_class_list",
    "parse_descriptors",
    "prompt_for",
    "require_distinct",
    "select_classes",
    "template_prompt",
    "template_prompts",
]
