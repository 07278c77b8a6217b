"""Image files in and out, through Pillow: one reader for every picture the scripts are given,
and PNG writers for masks and overlays, each written atomically (common/files.py)."""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.files import atomic_write_all

# The largest image read, about 7000×7000: 200 MB per float32 copy. A 20000×20000 PNG can be a
# few kB of compressed zeros, yet it is 1.6 GB per float32 copy, and reading, standardising,
# predicting and drawing hold several copies at once.
MAX_PIXELS = 50_000_000

# 16-bit and 32-bit integer grey and float images: their values are kept as they are.
NUMERIC_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class ImageError(Exception):
    """An image file that cannot be used; its message is one line for the user."""


def _open(path):
    """The file opened by Pillow: its header read, its pixels not yet decoded.

    Pillow refuses or warns about large images as it opens them, before we could name the size;
    its own check is off for the open only, so that ours (in `read_image`) is the one that
    speaks, and is restored whatever happens.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path} does not exist") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image Pillow can read (an unknown format, or an unsupported variant of one)"
        ) from None
    except OSError as error:
        raise ImageError(f"cannot read {path} ({error.strerror or error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_before_decoding(path, image):
    """Refuse what is too large to decode, or ambiguous, from the header alone."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{path} is {width}×{height} = {width * height:,} pixels; "
            f"images up to {MAX_PIXELS:,} pixels are read"
        )
    # A camera's MPO is a JPEG whose later frames are previews or a second view: the first is the photo.
    pages = getattr(image, "n_frames", 1)
    if pages > 1 and image.format != "MPO":
        raise ImageError(f"{path} has {pages} pages; give a single-page image")


def _grey_pixels(image):
    """(H, W) float32 in the file's own scale: 0..255 for 8-bit, 0..65535 for 16-bit."""
    if image.mode in NUMERIC_MODES:
        return np.asarray(image, dtype=np.float32)
    if image.mode == "LAB":
        image = image.getchannel("L")  # lightness is the grey; Pillow cannot convert LAB
    return np.asarray(image.convert("L"), dtype=np.float32)


def read_image(path):
    """One image file as grey pixels, in the file's own scale (not standardised).

    Any single-frame image Pillow opens is read (PNG, TIFF, JPEG, …). 16-bit and 32-bit grey
    and float images keep their values. Colour becomes grey by Pillow's luma rule (ITU-R 601,
    L = 0.299 R + 0.587 G + 0.114 B, i.e. `convert("L")`): palette images by their colours,
    alpha ignored, and 16-bit colour first reduced by Pillow to 8 bits per channel. A 1-bit
    image reads as 0 and 255.

    Size and page count are checked from the header, before any pixel is decoded.
    Returns:
    - (H, W) float32
    Raises ImageError naming the file and what is wrong with it.
    """
    with _open(path) as image:
        _check_before_decoding(path, image)
        try:
            pixels = _grey_pixels(image)
        except OSError as error:
            raise ImageError(f"{path} is damaged or truncated ({error})") from None
    if not np.isfinite(pixels).all():  # a float TIFF can hold NaN or infinity
        raise ImageError(f"{path} has NaN or infinite pixels")
    return pixels


def png_writer(pixels):
    """A writer for `atomic_write_all`: (H, W) uint8 grey or (H, W, 3) uint8 colour as a PNG of
    exactly that size, encoded now, so that a bad array fails before any file is touched."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return lambda file: file.write(buffer.getvalue())


def save_png(pixels, path):
    atomic_write_all({path: png_writer(pixels)})


def save_grey_png(image, path):
    """An (H, W) image of values in [0, 1] as an 8-bit grey PNG: round(255·x), clipped."""
    save_png(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), path)


def mask_pixels(mask):
    """An (H, W) mask (nonzero is object) as 8-bit grey pixels of 0 and 255, for a mask PNG."""
    return np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)
