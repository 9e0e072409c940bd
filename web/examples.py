"""The example images and the shipped descriptor set the page opens with.

Each example image comes with its class and confusable neighbours from the
demo set; `example_name` recognises an example by its content, so that an
upload that merely shares an example's file name is not taken for one.
Sources and licences of the images are in assets/examples/SOURCES.md.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from descriptors import load_descriptors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = ASSETS / "descriptors" / "demo.json"
EXAMPLES = sorted((ASSETS / "examples").glob("*.jpg"))
DEFAULT_CLASSES = "tabby cat, lynx, espresso, cappuccino, dahlia, tree frog, tailed frog"
EXAMPLE_CLASSES = {  # each example with its class and confusable neighbours from the demo set
    "tabby-cat": "tabby cat, lynx, tree frog",
    "espresso": "espresso, cappuccino, dahlia",
    "rocket": "rocket, space shuttle, astronaut",
    "astronaut": "astronaut, space shuttle, rocket",
    "pagoda": "pagoda, palace, rocket",
    "dahlia": "dahlia, chrysanthemum, tabby cat",
}
FIRST_EXAMPLE = ASSETS / "examples" / "tabby-cat.jpg"


def shipped_descriptors() -> dict[str, list[str]]:
    """A fresh copy of the demo set."""
    return load_descriptors(SHIPPED)


def example_classes(example: Path) -> str:
    """The class list an example image comes with."""
    return EXAMPLE_CLASSES.get(example.stem, DEFAULT_CLASSES)


def example_name(path: str | None) -> str | None:
    """The example an image file is, by content, or None."""
    if not path or not Path(path).is_file():
        return None
    digest = _file_digest(Path(path))
    return next((example.stem for example in EXAMPLES if _file_digest(example) == digest), None)


def example_path(name: object) -> str | None:
    """The file of the example called `name`, or None."""
    return next((str(p) for p in EXAMPLES if p.stem == name), None) if isinstance(name, str) else None


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, size: int, mtime: float) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _file_digest(path: Path) -> str:
    info = path.stat()
    return _digest_of(str(path), info.st_size, info.st_mtime)
