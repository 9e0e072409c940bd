"""A pool of explainers: each configured model loaded once, on first use, and shared.

The app serves every visitor from one pool, and the CLI's `evaluate`
compares the models of one; both get each model's `Explainer` by name. A
model that fails to load is tried once, and its one-line reason is kept
and given to every later caller. The on-disk embedding store is shared by
all of a pool's explainers (the cache keys name the model). Nothing here
scores anything.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

from explain.cache import EmbeddingStore
from explain.confidence import ProbabilityRule
from explain.engine import Explainer
from explain.errors import ModelLoadError
from explain.models import EncoderModel, load_model


class ExplainerPool:
    """The configured models by name, each loaded once and shared read-only; the first name is the default."""

    def __init__(
        self,
        names: Sequence[str],
        device: str = "auto",
        store: EmbeddingStore | None = None,
        on_note: Callable[[str], None] | None = None,
        loader: Callable[[str, str], EncoderModel] | None = None,
        rule: Callable[[str, EncoderModel], ProbabilityRule] | None = None,
        precision: str = "auto",
    ):
        if not names:
            raise ModelLoadError("no model was named")
        self.names = list(names)
        self.device = device
        self.store = store
        self._on_note = on_note
        self._loader = loader or functools.partial(load_model, precision=precision)
        self._rule = rule  # how each model's class scores become probabilities (default: the model's own kind)
        self._explainers: dict[str, Explainer] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None = None) -> Explainer:
        """The explainer of `name` (default: the first model), loading it on first use."""
        name = name or self.names[0]
        if name not in self.names:
            raise ModelLoadError(f"model {name!r} is not one of this app's models")
        with self._lock:
            if name in self._errors:
                raise ModelLoadError(self._errors[name])
            if name not in self._explainers:
                try:
                    model = self._loader(name, self.device)
                    rule = self._rule(name, model) if self._rule else "auto"
                    explainer = Explainer(model, store=self.store, probabilities=rule)
                except ModelLoadError as error:
                    self._errors[name] = str(error)
                    raise
                self._explainers[name] = explainer
                for note in explainer.model.notes:  # e.g. weights loaded with the architecture they were trained with
                    if self._on_note is not None:
                        self._on_note(note)
            return self._explainers[name]

    def load_error(self, name: str | None = None) -> str | None:
        """Load a model now; the reason it failed, or None."""
        try:
            self.get(name)
            return None
        except ModelLoadError as error:
            return str(error)
