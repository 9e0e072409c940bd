"""How much one request may ask for, where many people share one server.

A shared app (a Hugging Face Space) serves visitors it does not know; one
of them must not hold up the others with a huge class list or pasted text.
`RequestLimits` holds every bound on what a visitor sends and checks a
request against them, saying in one line which bound was hit. The web app
and its API use it; the command line, which runs on its owner's own
machine, does not. No files, no models, no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from descriptors.store import DescriptorError, Descriptors, parse_class_list, select_classes
from descriptors.validate import has_surrogate


@dataclass(frozen=True)
class RequestLimits:
    """The bounds on one request; the defaults are the app's."""

    max_classes: int = 1000  # an ImageNet-sized list still works; beyond that, evaluate offline
    max_descriptors_per_class: int = 64  # the DCLIP ImageNet set has at most 19 per class
    max_descriptors: int = 4000  # all classes together: a heavy request must not hold the others up
    max_descriptor_chars: int = 300  # CLIP reads 77 tokens; a longer line is pasted text, not a feature

    def choose(self, classes_text: str, descriptors: Mapping[str, list[str]]) -> Descriptors:
        """The classes of a comma-separated list, in its order, with their descriptors, within these bounds."""
        names = parse_class_list(classes_text or "")
        if len(names) > self.max_classes:
            raise DescriptorError(
                f"{len(names)} classes is more than the app takes ({self.max_classes}); use the CLI for more"
            )
        chosen = select_classes(descriptors, names)
        self.check(chosen)
        return chosen

    def check(self, chosen: Mapping[str, list[str]]) -> None:
        """Refuse, in one line, a set of classes that would hold everyone else up."""
        total = 0
        for name, values in chosen.items():
            if has_surrogate(name) or any(has_surrogate(v) for v in values):
                raise DescriptorError(f"class {name!r} contains a lone surrogate, which is not a character")
            kept = [v for v in values if v.strip()]
            if len(kept) > self.max_descriptors_per_class:
                raise DescriptorError(
                    f"class {name!r} has {len(kept)} descriptors; "
                    f"the app takes at most {self.max_descriptors_per_class} per class"
                )
            long = next((v for v in kept if len(v) > self.max_descriptor_chars), None)
            if long is not None:
                raise DescriptorError(
                    f"a descriptor of {name!r} is {len(long):,} characters long; "
                    f"the limit is {self.max_descriptor_chars} (CLIP reads 77 tokens)"
                )
            total += len(kept)
        if total > self.max_descriptors:
            raise DescriptorError(
                f"these classes have {total:,} descriptors together; the app takes {self.max_descriptors:,} "
                "per request; use the CLI for more"
            )
