"""Opening images safely and naming them by content.

`open_image` turns a path, bytes or a PIL image into an upright RGB image, or
raises `ImageError` with a one-line reason (missing, not an image, truncated,
too large). `content_key` hashes the decoded pixels, so the same picture gets
the same cache entry whether it came from a file, an upload or a paste.
Nothing here touches a model.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from explain.errors import ImageError, first_line

MAX_MEGAPIXELS = 100.0



def open_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """Decode `source` into an RGB image, honouring EXIF orientation."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts; PIL's bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                image = source
            elif isinstance(source, bytes):
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(Path(source))
            megapixels = image.width * image.height / 1e6
            if megapixels >= MAX_MEGAPIXELS:
                raise ImageError(f"{label}: image is {megapixels:.0f} megapixels; the limit is {MAX_MEGAPIXELS:.0f}")
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a recognised image format") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image is too large to decode; the limit is {MAX_MEGAPIXELS:.0f} megapixels") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{label}: cannot decode image ({first_line(error)})") from None


def content_key(image: Image.Image) -> str:
    """A hash of an RGB image's size and pixels."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
