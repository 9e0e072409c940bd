"""Opening images safely and naming them by content.

`open_image` turns a path, bytes or a PIL image into an upright RGB image, or
raises `ImageError` with a one-line reason (missing, not a regular file,
not an image, truncated, too large, too thin). Memory stays near what the model needs whatever the
file claims: the size and shape are checked from the header before any
pixel is decoded, large JPEGs are decoded at reduced scale, and other large
images are shrunk by an integer factor right after decoding, before any
copy is made. `content_key` hashes the decoded pixels, so the same picture
gets the same cache entry whether it came from a file, an upload or a
paste. Nothing here touches a model.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from explain.errors import ImageError, first_line

MAX_MEGAPIXELS = 100.0  # refused at or above this, whatever the format
MAX_ASPECT = 20.0  # longest side / shortest side; processors that keep the aspect would blow up thin images
MAX_DECODED_PIXELS = 8_000_000  # larger images are reduced by an integer factor to at most this
MAX_SHORT_SIDE = 2048  # ... and to a short side below this (CLIP-family inputs are 224-448 px)
MAX_FULL_DECODE_BYTES = 256 * 2**20  # formats without reduced decoding (PNG, WebP, ...) must fit in this

_BYTES_PER_PIXEL = {
    "I": 4,
    "F": 4,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
    "RGBA": 4,
    "RGBX": 4,
    "CMYK": 4,
    "RGBa": 4,
}


def reduction_factor(width: int, height: int) -> int:
    """The integer factor an image is shrunk by when decoded: 1 for ordinary photos."""
    by_pixels = math.ceil(math.sqrt(width * height / MAX_DECODED_PIXELS))
    return max(1, min(width, height) // (MAX_SHORT_SIDE // 2) if min(width, height) >= MAX_SHORT_SIDE else 1, by_pixels)


def _check_header(image: Image.Image, label: str) -> None:
    """Refuse from the header alone what would cost too much to decode."""
    width, height = image.size
    megapixels = width * height / 1e6
    if width < 1 or height < 1:
        raise ImageError(f"{label}: image has no pixels ({width}×{height})")
    if megapixels >= MAX_MEGAPIXELS:
        raise ImageError(
            f"{label}: image is {width}×{height} ({megapixels:.0f} megapixels); "
            f"the limit is {MAX_MEGAPIXELS:.0f} megapixels"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageError(
            f"{label}: image is {width}×{height}, {aspect:.0f} times longer than wide; the limit is {MAX_ASPECT:.0f}:1"
        )
    needed = width * height * _BYTES_PER_PIXEL.get(image.mode, len(image.getbands()))
    if image.format != "JPEG" and needed > MAX_FULL_DECODE_BYTES and reduction_factor(width, height) > 1:
        raise ImageError(
            f"{label}: a {width}×{height} {image.format or 'image'} needs {needed / 2**20:.0f} MB to decode; "
            "the limit is "
            f"{MAX_FULL_DECODE_BYTES / 2**20:.0f} MB (JPEGs are decoded at reduced size and accepted up to "
            f"{MAX_MEGAPIXELS:.0f} megapixels)"
        )


def _decode_small(image: Image.Image) -> Image.Image:
    """Decode, reduced by `reduction_factor`: JPEGs at reduced scale, others right after decoding."""
    factor = reduction_factor(*image.size)
    if factor > 1 and image.format == "JPEG":
        # The JPEG decoder scales by 1/2, 1/4 or 1/8 while decoding; it never goes below the size asked for.
        image.draft(image.mode, (math.ceil(image.width / factor), math.ceil(image.height / factor)))
    image.load()
    factor = reduction_factor(*image.size)
    if factor > 1:
        try:
            image = image.reduce(factor)
        except ValueError:  # palette and 1-bit images cannot be averaged: take every factor-th pixel
            image = image.resize(
                (math.ceil(image.width / factor), math.ceil(image.height / factor)), Image.Resampling.NEAREST
            )
    return image


def check_regular_file(path: Path, label: str | None = None) -> None:
    """Refuse, before opening it, a path that is not a regular file: a FIFO or a device (/dev/zero) would make
    a read wait forever or never end, and a folder is no image."""
    label = label or str(path)
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a regular file is fine
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except OSError as error:
        raise ImageError(f"{label}: cannot read ({error.__class__.__name__})") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{label}: is a directory, not an image")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file"
        )
        raise ImageError(f"{label}: is {kind}, not an image file")


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
                check_regular_file(Path(source), label)
                image = Image.open(Path(source))
            _check_header(image, label)
            image = _decode_small(image)
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
        raise ImageError(
            f"{label}: image is too large to decode; the limit is {MAX_MEGAPIXELS:.0f} megapixels"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{label}: cannot decode image ({first_line(error)})") from None
    except MemoryError:
        raise ImageError(f"{label}: not enough memory to decode this image") from None


def content_key(image: Image.Image) -> str:
    """A hash of an RGB image's size and pixels."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
