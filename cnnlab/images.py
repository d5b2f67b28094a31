"""Image input: any upload or file becomes an RGB display image and a normalized tensor for an architecture.

Everything that reads a user's image goes through `read_image`, which refuses (with `ImageInputError`, one line)
empty files, files over `MAX_FILE_BYTES`, non-images, truncated or corrupt files and images that declare more than
`MAX_PIXELS` pixels, checking the declared size from the header before decoding. Pillow's own decompression-bomb
guard stays on and truncated images are never accepted.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.registry import ArchSpec

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
ACCEPTED_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
BACKGROUND = (255, 255, 255)
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_TITLES = {"chelsea": "Chelsea the cat", "coffee": "A cup of coffee", "rocket": "Falcon 9 rocket launch",
                 "astronaut": "Astronaut Eileen Collins", "digit": "A handwritten 3 (scikit-learn's digits, 8x8)"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  Image.DecompressionBombError)


class ImageInputError(ValueError):
    """An image cnnlab will not read; the message says why in one line."""


class ImageInput(NamedTuple):
    """A model-ready batch of one image (1 x C x H x W) and the RGB image to show."""

    tensor: torch.Tensor
    image: Image.Image


def _read_bytes(source: bytes | str | os.PathLike, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), name or "the upload"
    else:
        path = Path(source)
        label = path.name
        if path.is_dir():
            raise ImageInputError(f"{path} is a folder, not an image file")
        if not path.is_file():
            raise ImageInputError(f"{path}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageInputError(f"{label} is {path.stat().st_size / 2**20:.0f} MB; the limit is "
                                  f"{MAX_FILE_BYTES // 2**20} MB")
        data = path.read_bytes()
    if not data:
        raise ImageInputError(f"{label} is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageInputError(f"{label} is {len(data) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    return data, label


def _open_checked(data: bytes, label: str) -> Image.Image:
    """Open (header only) and check the declared size before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check below says it better
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageInputError(f"{label} is not an image cnnlab can read (JPEG, PNG, WebP, BMP, GIF or TIFF)") from None
    except Image.DecompressionBombError as error:
        declared = re.search(r"\((\d+) pixels\)", str(error))  # PIL: 'Image size (900000000 pixels) exceeds ...'
        size = (f"{int(declared.group(1)) / 1e6:.0f} megapixels" if declared else
                f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
        raise ImageInputError(f"{label} declares {size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels") from None
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{label} is corrupt: {_first_line(error)}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{label} declares an empty {width}x{height} image")
    if width * height > MAX_PIXELS:
        raise ImageInputError(f"{label} declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
                              f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels")
    return image


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8 bits by scaling the value range, never by clipping."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif image.mode == "I" and values.min() >= 0 and values.max() <= 65535:
        low, high = 0.0, 65535.0 if values.max() > 255 else 255.0
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 1:
        low, high = 0.0, 1.0
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency composited onto white, 16-bit ranges scaled, CMYK converted."""
    if image.mode.startswith(("I;16", "I", "F")):
        return _high_bit_depth_to_l(image).convert("RGB")
    has_alpha = "A" in image.getbands() or "transparency" in image.info or image.mode in ("PA", "RGBa", "La")
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(source: bytes | str | os.PathLike, name: str | None = None) -> Image.Image:
    """An upload (bytes, `name` for messages) or a path as an upright 8-bit RGB image (first frame of an animation).

    ImageInputError, one line, for anything cnnlab will not read (see the module docstring)."""
    data, label = _read_bytes(source, name)
    image = _open_checked(data, label)
    try:
        image.seek(0)
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"{label} refused as a possible decompression bomb: {error}") from None
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{label} is truncated or corrupt: {_first_line(error)}") from None
    try:
        return to_rgb(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{label}: cannot convert its {image.mode} pixels to RGB: {_first_line(error)}") from None


def preprocess(image: Image.Image, spec: ArchSpec, image_size: int | None = None) -> torch.Tensor:
    """The architecture's own preprocessing of an RGB image, the very steps a run validates with
    (`data.transforms_for`): resize the short side, centre-crop, normalize; rescaled to `image_size` for a model
    trained at another size (see ArchSpec.preprocessing_at).

    Returns a float tensor of shape (C, H, W), grayscale for single-channel architectures."""
    from cnnlab.data import transforms_for

    return transforms_for(spec, train=False, image_size=image_size)(image)


def image_input(source: bytes | str | os.PathLike, spec: ArchSpec, name: str | None = None,
                image_size: int | None = None) -> ImageInput:
    """Read an upload or a file (see `read_image`) and prepare it for `spec`: (1 x C x H x W batch, RGB image)."""
    image = read_image(source, name)
    return ImageInput(preprocess(image, spec, image_size).unsqueeze(0), image)


def fit_within(image: Image.Image, max_side: int, min_side: int = 0) -> Image.Image:
    """A copy for display: no larger than `max_side` on either side, and a tiny image (an 8x8 digit) enlarged
    by whole pixels until its longer side reaches `min_side`, so that it stays sharp."""
    copy = image.copy()
    copy.thumbnail((max_side, max_side))
    factor = min_side // max(copy.size)
    if factor > 1:
        copy = copy.resize((copy.width * factor, copy.height * factor), Image.Resampling.NEAREST)
    return copy


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG (lossless), as an upload of it would arrive."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_images() -> dict[str, Path]:
    """The sample photos in assets/ by name ('chelsea' for chelsea.png), in SAMPLE_TITLES order, the cat first."""
    found = {path.stem: path for path in sorted(SAMPLES_DIR.iterdir())
             if path.suffix.lower().lstrip(".") in ACCEPTED_SUFFIXES}
    order = list(SAMPLE_TITLES) + sorted(set(found) - set(SAMPLE_TITLES))
    return {name: found[name] for name in order if name in found}
