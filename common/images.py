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


def _check_depth(path, image):
    """Pillow reads 16-bit colour at 8 bits per channel: refuse it rather than lose the low bits."""
    rawmode = next(iter(image.tile), None)
    rawmode = getattr(rawmode, "args", None)
    rawmode = rawmode if isinstance(rawmode, str) else (rawmode or ("",))[0]
    if image.mode in ("RGB", "RGBA") and ";16" in str(rawmode):
        raise ImageError(
            f"{path} is 16-bit colour, which Pillow would cut to 8 bits per channel; save it as 16-bit grey"
        )


def _grey_pixels(image):
    """(H, W) float32 in the file's own scale: 0..255 for 8-bit, 0..65535 for 16-bit."""
    if image.mode in NUMERIC_MODES:
        return np.asarray(image, dtype=np.float32)
    if image.mode == "LAB":
        image = image.getchannel("L")  # lightness is the grey; Pillow cannot convert LAB
    return np.asarray(image.convert("L"), dtype=np.float32)


def image_size(path):
    """(width, height) from the file's header, no pixel decoded."""
    with _open(path) as image:
        return image.size


def read_image(path):
    """One image file as grey pixels, in the file's own scale (not standardised).

    Any single-frame image Pillow opens is read (PNG, TIFF, JPEG, …). 16-bit and 32-bit grey
    and float images keep their values. Colour becomes grey by Pillow's luma rule (ITU-R 601,
    L = 0.299 R + 0.587 G + 0.114 B, i.e. `convert("L")`): palette images by their colours,
    alpha ignored. 16-bit colour is refused (Pillow would keep 8 bits of each channel). A 1-bit
    image reads as 0 and 255.

    Size and page count are checked from the header, before any pixel is decoded.
    Returns:
    - (H, W) float32
    Raises ImageError naming the file and what is wrong with it.
    """
    with _open(path) as image:
        _check_before_decoding(path, image)
        _check_depth(path, image)
        try:
            pixels = _grey_pixels(image)
        except OSError as error:
            raise ImageError(f"{path} is damaged or truncated ({error})") from None
    if not np.isfinite(pixels).all():  # a float TIFF can hold NaN or infinity
        raise ImageError(f"{path} has NaN or infinite pixels")
    return pixels


MASK_FORMATS = ("PNG", "TIFF")  # lossless: a mask's values are its meaning
MAX_LABEL = 65_535  # instance labels fit 16 bits


def _mask_values(path, image):
    """(H, W) int64 values of a mask in any lossless mode: one channel, or grey stored as colour
    (equal channels, opaque alpha); a true colour mask is refused."""
    if image.mode in ("1", "L", "I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64 if image.mode == "F" else np.int64)
        if image.mode == "F" and not np.array_equal(values, np.round(values)):
            raise ImageError(f"{path} holds fractions; a mask holds whole numbers (0 background, 1… objects)")
        return values.astype(np.int64)
    if image.mode not in ("LA", "P", "PA", "RGB", "RGBA"):
        raise ImageError(f"{path} is a {image.mode} image; give a grey mask (0 background, 1… objects)")
    pixels = np.asarray(image.convert("RGBA"), dtype=np.int64)  # (H, W, 4)
    if (pixels[..., 3] != 255).any():
        raise ImageError(f"{path} is partly transparent; a mask's every pixel must say background or object")
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    if not (np.array_equal(red, green) and np.array_equal(red, blue)):
        colours = len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0))
        raise ImageError(
            f"{path} is a colour mask ({colours} colours); give one grey channel: 0 background, "
            "one value or labels 1…K for the objects"
        )
    return red


def read_mask(path):
    """A mask file as instance labels, and whether it held them.

    Masks must be lossless (PNG or TIFF: a JPEG's compression invents values along every edge)
    and one grey channel, or grey stored as RGB(A). A mask of 0 and one other value is binary;
    one of 0, 1, …, K (8- or 16-bit) is an instance-label image, each object its own number.
    Anything else (0, 128 and 255 from an anti-aliased brush, say) is refused: it is neither.

    Returns:
    - labels: (H, W) int32, 0 background; for a binary mask 1 wherever it is not 0
    - labelled: True for an instance-label image, False for a binary mask
    Raises ImageError naming the file and what is wrong with it.
    """
    with _open(path) as image:
        _check_before_decoding(path, image)
        if image.format not in MASK_FORMATS:
            why = " (lossy: its compression invents values along every edge)" * (image.format == "JPEG")
            raise ImageError(f"{path} is a {image.format}{why}; save masks as PNG or TIFF")
        _check_depth(path, image)
        try:
            values = _mask_values(path, image)
        except OSError as error:
            raise ImageError(f"{path} is damaged or truncated ({error})") from None
    found = np.unique(values)
    objects = found[found != 0]
    if len(objects) <= 1:
        return (values != 0).astype(np.int32), False
    if found[0] < 0 or objects[-1] != len(objects) or objects[-1] > MAX_LABEL:
        shown = ", ".join(map(str, found[:5])) + ", …" * (len(found) > 5)
        raise ImageError(
            f"{path} holds {len(found)} values ({shown}): neither binary (0 and one value) nor "
            "instance labels 0, 1, …, K; save it without anti-aliasing, or relabel it 1…K"
        )
    return values.astype(np.int32), True


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
