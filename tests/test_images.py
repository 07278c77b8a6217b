import re
import struct
import zlib

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageFile

from common import images, plotting
from common.images import ImageError, mask_pixels, read_image, read_mask, save_grey_png, save_png
from common.plotting import figure_format, overlay_pixels, save_figure


def save_overlay(image, mask, path, grid=None):
    save_png(overlay_pixels(image, mask, grid), path)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED, YELLOW = [255, 0, 0], [255, 255, 0]


def luma(red, green, blue):
    """ITU-R 601, the rule `read_image` promises for colour."""
    return 0.299 * red + 0.587 * green + 0.114 * blue


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(width, height, bit_depth, colour_type, rows=b""):
    """A PNG built byte by byte: its header says what we like, whatever `rows` holds."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            png_chunk(b"IHDR", header),
            png_chunk(b"IDAT", zlib.compress(rows)),
            png_chunk(b"IEND", b""),
        )
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def load(image):
        raise AssertionError(f"{image.filename} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# ----------------------------------------------------------------------------- reading


def test_8_bit_grey_png_reads_as_its_values_in_rows_and_columns(tmp_path):
    pixels = np.array([[0, 1, 2, 3, 255], [10, 20, 30, 40, 50], [7, 7, 7, 7, 128]], dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    read = read_image(tmp_path / "grey.png")
    assert read.dtype == np.float32 and read.shape == (3, 5)
    np.testing.assert_array_equal(read, pixels)


@pytest.mark.parametrize(
    "name, mode, dtype",
    [
        ("16.png", "I;16", "<u2"),
        ("16.tif", "I;16", "<u2"),
        ("16b.tif", "I;16B", ">u2"),
        ("32.tif", "I", "<i4"),
        ("float.tif", "F", "<f4"),
    ],
)
def test_deep_grey_keeps_its_values(tmp_path, name, mode, dtype):
    values = np.array([[0, 1, 257], [40000, 65534, 65535]]).astype(dtype)
    Image.frombytes(mode, (3, 2), values.tobytes()).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode  # the file really is that deep
    np.testing.assert_array_equal(read_image(tmp_path / name), values.astype(np.float32))


def test_rgb_becomes_grey_by_the_601_luma_rule(tmp_path):
    pixels = np.array([[[200, 100, 50], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    expected = [luma(200, 100, 50), luma(0, 0, 255), 255]  # 124.2, 29.07, 255
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png")[0], expected, atol=0.5)


def test_alpha_is_ignored(tmp_path):
    rgba = np.array([[[200, 100, 50, 0], [200, 100, 50, 255]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), [[luma(200, 100, 50)] * 2], atol=0.5)
    grey_alpha = np.array([[[90, 0], [90, 255]]], dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), [[90, 90]])


def test_palette_reads_as_the_luma_of_its_colours(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([200, 100, 50, 0, 255, 0, 10, 20, 30])
    palette.putdata([2, 0, 1])
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    expected = [luma(10, 20, 30), luma(200, 100, 50), luma(0, 255, 0)]
    np.testing.assert_allclose(read_image(tmp_path / "palette.png")[0], expected, atol=0.5)


def test_one_bit_reads_as_0_and_255(tmp_path):
    Image.fromarray(np.array([[True, False, True]])).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png"), [[255, 0, 255]])


def handmade_rgb16_tiff(width, height):
    """An uncompressed 16-bit-per-channel RGB TIFF (Pillow cannot write one)."""
    pixels = np.full((height, width, 3), 0xC812, "<u2").tobytes()
    tags = [  # (tag, type, count, value): type 3 is SHORT, 4 is LONG
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, 8 + 2 + 9 * 12 + 4),  # bits per sample: three SHORTs, stored after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8 + 2 + 9 * 12 + 4 + 6),  # the pixels follow the bits per sample
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", tag, kind, count)
        + struct.pack("<I" if kind == 4 or count > 1 else "<HH", value, *[0] * (kind == 3 and count == 1))
        for tag, kind, count, value in tags
    )
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + struct.pack("<I", 0)
        + struct.pack("<HHH", 16, 16, 16)
        + pixels
    )


@pytest.mark.parametrize("name", ["rgb16.png", "rgb16.tif"])
def test_16_bit_colour_is_refused_rather_than_cut_to_8_bits(tmp_path, name):
    pixel = struct.pack(">HHH", 0xC812, 0x6434, 0x3256)
    png = handmade_png(2, 1, 16, 2, b"\x00" + pixel * 2)
    (tmp_path / name).write_bytes(png if name.endswith(".png") else handmade_rgb16_tiff(2, 1))
    assert Image.open(tmp_path / name).mode == "RGB"  # what Pillow makes of it: 8 bits a channel
    with pytest.raises(ImageError, match=f"{name} is 16-bit colour, which Pillow would cut to 8 bits"):
        read_image(tmp_path / name)


def test_lab_reads_its_lightness(tmp_path):
    Image.new("LAB", (2, 2), (90, 140, 100)).save(tmp_path / "lab.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "lab.tif"), np.full((2, 2), 90))


def test_jpeg_reads_close_to_what_was_written(tmp_path):
    Image.new("RGB", (16, 8), (200, 100, 50)).save(tmp_path / "flat.jpg", quality=95)
    read = read_image(tmp_path / "flat.jpg")
    assert read.shape == (8, 16)
    np.testing.assert_allclose(read, luma(200, 100, 50), atol=2)  # JPEG is lossy


def test_mpo_camera_photo_reads_its_first_picture(tmp_path):
    photo, preview = Image.new("RGB", (8, 8), (60, 60, 60)), Image.new("RGB", (8, 8), (200, 200, 200))
    photo.save(tmp_path / "camera.mpo", save_all=True, append_images=[preview], quality=95)
    assert Image.open(tmp_path / "camera.mpo").n_frames == 2
    np.testing.assert_allclose(read_image(tmp_path / "camera.mpo"), 60, atol=2)


# ----------------------------------------------------------------------------- refusals


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nothing\.png does not exist$"):
        read_image(tmp_path / "nothing.png")


def test_a_folder_cannot_be_read(tmp_path):
    with pytest.raises(ImageError, match="^cannot read .*"):
        read_image(tmp_path)


def test_text_named_png_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.png is not an image Pillow can read \(.+\)$"):
        read_image(tmp_path / "notes.png")


def test_truncated_png_is_damaged(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "half.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match=r"half\.png is damaged or truncated \(.+\)$"):
        read_image(tmp_path / "half.png")


def test_multi_page_tiff_is_refused_before_decoding(tmp_path, no_decoding):
    pages = [Image.new("L", (4, 4), value) for value in (0, 100, 200)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageError, match=r"stack\.tif has 3 pages; give a single-page image$"):
        read_image(tmp_path / "stack.tif")


# 10000² is past Pillow's own warning (89 Mpx), 20000² past its error (179 Mpx): ours speaks first.
@pytest.mark.parametrize("side", [7072, 10000, 20000])
def test_header_over_the_limit_is_refused_before_decoding(tmp_path, recwarn, no_decoding, side):
    (tmp_path / "bomb.png").write_bytes(handmade_png(side, side, 8, 0))  # no pixel data at all
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as refused:
        read_image(tmp_path / "bomb.png")
    assert str(refused.value) == (
        f"{tmp_path / 'bomb.png'} is {side}×{side} = {side * side:,} pixels; "
        "images up to 50,000,000 pixels are read"
    )
    assert len(recwarn) == 0  # no DecompressionBombWarning either
    assert Image.MAX_IMAGE_PIXELS == limit_before  # Pillow's own limit is back as it was


def test_the_limit_is_inclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    Image.new("L", (10, 10), 3).save(tmp_path / "exact.png")
    Image.new("L", (11, 10), 3).save(tmp_path / "over.png")
    assert read_image(tmp_path / "exact.png").shape == (10, 10)
    with pytest.raises(ImageError, match=r"is 11×10 = 110 pixels; images up to 100 pixels are read$"):
        read_image(tmp_path / "over.png")


# ----------------------------------------------------------------------------- writing


def test_mask_png_is_8_bit_grey_of_0_and_255_at_full_size(tmp_path):
    mask = np.array([[True, False, False, True, True], [False, False, True, False, False]])
    save_png(mask_pixels(mask), tmp_path / "mask.png")
    save_png(mask_pixels(mask.astype(np.float32)), tmp_path / "ones.png")  # 0/1 floats say the same
    for name in ("mask.png", "ones.png"):
        written = Image.open(tmp_path / name)
        assert written.mode == "L" and written.size == (5, 2)
        np.testing.assert_array_equal(np.asarray(written), mask * 255)


def test_grey_png_rounds_and_clips(tmp_path):
    save_grey_png(np.array([[0.0, 0.25, 0.5, 1.0, 1.5, -0.5]]), tmp_path / "grey.png")
    written = Image.open(tmp_path / "grey.png")
    assert written.mode == "L"
    np.testing.assert_array_equal(np.asarray(written), [[0, 64, 128, 255, 255, 0]])  # 63.75, 127.5


# ----------------------------------------------------------------------------- figures and overlays


def read_rgb(path):
    written = Image.open(path)
    assert written.format == "PNG" and written.mode == "RGB"
    return np.asarray(written)


def test_overlay_outlines_the_mask_in_red(tmp_path):
    image = np.arange(48, dtype=np.float32).reshape(6, 8)
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:5, 2:6] = True  # a 4×4 square: its outline is all but the 2×2 middle
    save_overlay(image, mask, tmp_path / "overlay.png")
    # fmt: off
    outline = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ], dtype=bool)
    # fmt: on
    rgb = read_rgb(tmp_path / "overlay.png")
    assert rgb.shape == (6, 8, 3)
    np.testing.assert_array_equal(np.all(rgb == RED, axis=-1), outline)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[5, 7].tolist() == [255, 255, 255]  # min, max
    assert rgb[2, 3].tolist() == [round(19 / 47 * 255)] * 3  # inside the square: the image


def test_overlay_draws_tile_seams_in_yellow(tmp_path):
    save_overlay(np.zeros((6, 8)), np.zeros((6, 8)), tmp_path / "seams.png", grid=4)
    rgb = read_rgb(tmp_path / "seams.png")
    yellow = np.all(rgb == YELLOW, axis=-1)
    assert np.flatnonzero(yellow.all(axis=1)).tolist() == [4]  # the first row of the second tile
    assert np.flatnonzero(yellow.all(axis=0)).tolist() == [4]
    assert yellow.sum() == 8 + 6 - 1
    assert rgb[0, 0].tolist() == [128, 128, 128]  # a constant image is mid-grey


def test_a_large_overlay_is_shown_smaller_and_keeps_thin_outlines(tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "DISPLAY_MAX", 4)
    mask = np.zeros((12, 10), dtype=bool)
    mask[7, 4] = True  # one pixel, in block (7 // 3, 4 // 3) once shown every 3 pixels
    save_overlay(np.random.default_rng(0).random((12, 10)), mask, tmp_path / "small.png")
    red = np.all(read_rgb(tmp_path / "small.png") == RED, axis=-1)
    assert red.shape == (4, 4)  # ⌈12/3⌉ × ⌈10/3⌉
    assert np.argwhere(red).tolist() == [[2, 1]]


@pytest.mark.parametrize(
    "height, width, shown",
    [
        (1, 1, (1, 1)),
        (1, 300, (1, 300)),
        (300, 1, (300, 1)),
        (3000, 2, (1500, 1)),  # shown every 2 pixels
        (4100, 4100, (1367, 1367)),  # every 3
    ],
)
def test_overlay_of_any_shape_stays_within_2000_pixels(tmp_path, height, width, shown):
    mask = np.ones((height, width), dtype=bool)  # every image border is the outline
    save_overlay(np.zeros((height, width), dtype=np.float32), mask, tmp_path / "any.png", grid=256)
    rgb = read_rgb(tmp_path / "any.png")
    assert rgb.shape[:2] == shown
    assert rgb[0, 0].tolist() == RED and rgb[-1, -1].tolist() == RED


def test_overlay_of_a_4100_square_mask_marks_its_edges(tmp_path):
    mask = np.zeros((4100, 4100), dtype=bool)
    mask[100:4000, 100:4000] = True
    save_overlay(np.zeros(mask.shape, dtype=np.float32), mask, tmp_path / "big.png")
    red = np.all(read_rgb(tmp_path / "big.png") == RED, axis=-1)  # shown every 3 pixels
    assert red[100 // 3, 500].all() and red[3999 // 3, 500] and red[500, 3999 // 3]
    assert not red[700, 700] and not red[10, 10]


def line_figure():
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    return figure


def test_figures_are_written_in_the_format_their_name_says(tmp_path):
    save_figure(line_figure(), tmp_path / "plot.pdf")
    save_figure(line_figure(), tmp_path / "plot.svg")
    save_figure(line_figure(), tmp_path / "plot.PNG")
    assert (tmp_path / "plot.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:1000]
    assert (tmp_path / "plot.PNG").read_bytes()[:8] == PNG_SIGNATURE


def test_other_figure_names_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"plot\.jpg: a figure's name must end in one of .png, .pdf, .svg$"):
        save_figure(line_figure(), tmp_path / "plot.jpg")
    assert list(tmp_path.iterdir()) == []
    assert figure_format("out/curves.svg") == "svg"
    with pytest.raises(ValueError):
        figure_format("curves")


def test_non_finite_pixels_are_refused_and_huge_ones_standardise(tmp_path):
    from common.data import standardize

    values = np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="nan.tif has NaN or infinite pixels"):
        read_image(tmp_path / "nan.tif")
    Image.fromarray(np.array([[0.0, 1e36], [2e36, 3e36]], np.float32)).save(tmp_path / "huge.tif")
    np.testing.assert_allclose(
        standardize(read_image(tmp_path / "huge.tif")), [[-1.342, -0.447], [0.447, 1.342]], atol=1e-3
    )


# ----------------------------------------------------------------------------- masks


def save(pixels, path, mode=None):
    Image.fromarray(pixels, mode).save(path) if mode else Image.fromarray(pixels).save(path)
    return path


def test_a_mask_of_0_and_one_value_is_binary(tmp_path):
    pixels = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    labels, labelled = read_mask(save(pixels, tmp_path / "a_mask.png"))
    np.testing.assert_array_equal(labels, pixels // 255)
    assert labels.dtype == np.int32 and not labelled


@pytest.mark.parametrize("name", ["labels.png", "labels.tif"])
def test_16_bit_labels_keep_every_object(tmp_path, name):
    pixels = np.array([[0, 1, 2], [300, 299, 0]], np.uint16)
    pixels = np.where(pixels > 2, pixels - 296, pixels).astype(np.uint16)  # 0, 1, 2, 3, 4
    labels, labelled = read_mask(save(pixels, tmp_path / name))
    np.testing.assert_array_equal(labels, pixels)
    assert labelled


def test_grey_stored_as_opaque_colour_is_grey(tmp_path):
    grey = np.array([[0, 1], [2, 0]], np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    labels, labelled = read_mask(save(rgba, tmp_path / "rgba.png"))
    np.testing.assert_array_equal(labels, grey)
    assert labelled


@pytest.mark.parametrize(
    "pixels, name, message",
    [
        (np.array([[0, 255]], np.uint8), "m.jpg", "is a JPEG (lossy: its compression invents values"),
        (np.array([[[0, 0, 0], [255, 0, 0]]], np.uint8), "m.png", "is a colour mask (2 colours)"),
        (np.array([[[1, 1, 1, 255], [1, 1, 1, 0]]], np.uint8), "m.png", "is partly transparent"),
        (np.array([[0, 128, 255]], np.uint8), "m.png", "holds 3 values (0, 128, 255): neither binary"),
        (np.array([[0, 1, 3]], np.uint8), "m.png", "holds 3 values (0, 1, 3): neither binary"),
        (np.array([[0, 0.5]], np.float32), "m.tif", "holds fractions"),
    ],
)
def test_what_is_not_a_mask_is_refused_naming_why(tmp_path, pixels, name, message):
    with pytest.raises(ImageError, match=re.escape(f"{tmp_path / name} {message}")):
        read_mask(save(pixels, tmp_path / name))


def test_an_all_background_mask_reads_as_zeros(tmp_path):
    labels, labelled = read_mask(save(np.zeros((3, 4), np.uint8), tmp_path / "empty.png"))
    assert labels.shape == (3, 4) and not labels.any() and not labelled
