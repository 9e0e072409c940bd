"""How much one request may ask for, where many people share one server.

A shared app (a Hugging Face Space) serves visitors it does not know; one
of them must not hold up the others with a huge class list or pasted text,
nor fill the server's memory and disk. `RequestLimits` holds every bound on
what a visitor sends (class names, descriptors, the whole session's set)
and checks a request against them, saying in one line which bound was hit.
The web app and its API use it for every way in: the page, the API, links,
uploads, what the browser kept, and the LLM buttons. The command line, which
runs on its owner's own machine, does not. No files, no models, no network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from descriptors.store import DescriptorError, Descriptors, parse_class_list, select_classes
from descriptors.validate import has_surrogate


@dataclass(frozen=True)
class RequestLimits:
    """The bounds on one request; the defaults are the app's."""

    max_classes: int = 1000  # an ImageNet-sized list still works; beyond that, evaluate offline
    max_class_chars: int = 100  # the longest ImageNet class name has 30 characters
    max_descriptors_per_class: int = 64  # the DCLIP ImageNet set has at most 19 per class
    max_descriptors: int = 4000  # all classes together: a heavy request must not hold the others up
    max_descriptor_chars: int = 300  # CLIP reads 77 tokens; a longer line is pasted text, not a feature
    max_state_bytes: int = 256 * 1024  # a session's whole set, as JSON: what a link, an upload or a browser holds

    @property
    def max_classes_text(self) -> int:
        """The longest class list that can be within the bounds (names, commas and a space each)."""
        return self.max_classes * (self.max_class_chars + 2)

    def choose(self, classes_text: str, descriptors: Mapping[str, list[str]]) -> Descriptors:
        """The classes of a comma-separated list, in its order, with their descriptors, within these bounds."""
        text = classes_text or ""
        if len(text) > self.max_classes_text:
            raise DescriptorError(
                f"the class list is {len(text):,} characters long; the limit is {self.max_classes_text:,}"
            )
        names = parse_class_list(text)
        if len(names) > self.max_classes:
            raise DescriptorError(
                f"{len(names)} classes is more than the app takes ({self.max_classes}); use the CLI for more"
            )
        self.check_names(names)
        chosen = select_classes(descriptors, names)
        self.check(chosen)
        return chosen

    def check_names(self, names: Iterable[str]) -> None:
        """Refuse a class name that no class has: too long, or not text at all (a lone surrogate)."""
        for name in names:
            if len(name) > self.max_class_chars:
                raise DescriptorError(
                    f"a class name of {len(name):,} characters ({name[:30]!r}...) is longer than the "
                    f"{self.max_class_chars} the app takes"
                )
            if has_surrogate(name):
                raise DescriptorError(f"class {name!r} contains a lone surrogate, which is not a character")

    def check(self, chosen: Mapping[str, list[str]]) -> None:
        """Refuse, in one line, a set of classes that would hold everyone else up."""
        total = 0
        self.check_names(chosen)
        for name, values in chosen.items():
            if any(has_surrogate(v) for v in values):
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

    def check_state(self, descriptors: Mapping[str, list[str]], classes_text: str = "") -> None:
        """Refuse a session's whole set (every class it holds, not only those listed) past `max_state_bytes`."""
        text = json.dumps(descriptors, ensure_ascii=False) + (classes_text or "")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_state_bytes:
            raise DescriptorError(
                f"the descriptor set would be {size / 1024:,.0f} KB; a session holds at most "
                f"{self.max_state_bytes // 1024} KB (use the CLI for larger sets)"
            )
