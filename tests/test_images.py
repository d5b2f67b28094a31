"""Image input on real photos and on every kind of bad or unusual file, made here."""
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image, ImageFile

from cnnlab.images import (MAX_FILE_BYTES, MAX_PIXELS, ImageInputError, fit_within, image_input, preprocess,
                           read_image, sample_images)
from cnnlab.registry import build_model, get_spec


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with a tiny (wrong) image data chunk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def patches() -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """Five 32x32 colour patches side by side: red, green, blue, white, black."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    array = np.concatenate([np.full((32, 32, 3), c, np.uint8) for c in colours], axis=1)
    return Image.fromarray(array), colours


def patch_centres(image: Image.Image, count: int) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in image.getpixel((16 + 32 * i, 16))) for i in range(count)]


def test_sample_photos_read_pixel_for_pixel():
    samples = sample_images()
    assert list(samples)[0] == "chelsea"
    chelsea = read_image(samples["chelsea"])
    assert chelsea.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(chelsea), skimage.data.chelsea())
    np.testing.assert_array_equal(np.asarray(read_image(samples["coffee"])), skimage.data.coffee())


def test_the_digit_sample_is_a_held_out_three_from_the_digits_dataset():
    from sklearn.datasets import load_digits

    from cnnlab.data import load_dataset, stratified_split

    digits = load_digits()
    digit = read_image(sample_images()["digit"])
    assert digit.size == (8, 8) and digits.target[279] == 3
    np.testing.assert_array_equal(np.asarray(digit)[..., 0], np.clip(digits.images[279] * 16, 0, 255))
    dataset = load_dataset("digits")
    assert 279 in stratified_split(dataset.targets, 0.2, 0)[1]  # the default split's validation side
    assert (np.asarray(dataset[279][0])[0] == np.asarray(digit)[..., 0]).all()
    shown = fit_within(digit, 1024, 256)
    assert shown.size == (256, 256) and shown.getpixel((0, 0)) == digit.getpixel((0, 0))
    assert fit_within(read_image(sample_images()["chelsea"]), 200, 256).size == (200, 133)


@pytest.mark.parametrize("format,options", [("JPEG", {"quality": 95}), ("WEBP", {"lossless": True}), ("BMP", {}),
                                            ("TIFF", {}), ("PNG", {})])
def test_every_accepted_format_reads_the_photo(format, options):
    original = Image.fromarray(skimage.data.chelsea())
    image = read_image(encode(original, format, **options))
    assert image.size == original.size and image.mode == "RGB"
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(original, np.int16)).mean()
    assert difference < (3 if format == "JPEG" else 0.01)


def test_gif_gives_its_first_frame():
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert read_image(data).getpixel((8, 8)) == (255, 0, 0)


def test_declared_size_beyond_pillows_bomb_guard_is_refused_before_decoding():
    with pytest.raises(ImageInputError, match="huge.png declares 900 megapixels; the limit is 40 megapixels"):
        read_image(png_header_only(30000, 30000), "huge.png")


def test_a_size_pillow_only_warns_about_is_refused_in_one_line_without_its_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
        with pytest.raises(ImageInputError, match=r"10000x10000 pixels \(100 megapixels\); the limit is 40"):
            read_image(png_header_only(10000, 10000), "big.png")


def test_declared_size_beyond_cnnlab_limit_is_refused_before_decoding():
    width, height = 8000, 6000
    assert width * height > MAX_PIXELS and width * height < Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageInputError, match=r"8000x6000 pixels \(48 megapixels\); the limit is 40 megapixels"):
        read_image(png_header_only(width, height))


def test_pillow_bomb_guard_is_still_on():
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > MAX_PIXELS


def test_cut_off_jpeg_is_refused(tmp_path):
    data = encode(Image.fromarray(skimage.data.chelsea()), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="cut.jpg is truncated or corrupt"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_is_refused():
    data = bytearray(encode(Image.fromarray(skimage.data.chelsea()), "PNG"))
    start = data.index(b"IDAT") + 200
    data[start:start + 400] = bytes(400)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        read_image(bytes(data))


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageInputError, match="notes.jpg is not an image"):
        read_image(path)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty.png is empty"):
        read_image(empty)
    with pytest.raises(ImageInputError, match="is empty"):
        read_image(b"")
    with pytest.raises(ImageInputError, match="no such file"):
        read_image(tmp_path / "absent.png")


def test_file_over_the_size_limit_is_refused_unread():
    with pytest.raises(ImageInputError, match="the limit is 50 MB"):
        read_image(b"\x89PNG" + bytes(MAX_FILE_BYTES))


def test_cmyk_jpeg_keeps_its_colours():
    image, colours = patches()
    data = encode(image.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    converted = read_image(data)
    assert converted.mode == "RGB"
    for got, want in zip(patch_centres(converted, len(colours)), colours):
        assert max(abs(g - w) for g, w in zip(got, want)) <= 6, (got, want)


def test_16_bit_png_ramp_stays_a_ramp():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    row = np.asarray(read_image(data))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) == 256
    np.testing.assert_array_equal(row, np.arange(256))


def test_32_bit_integer_tiff_ramp_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.int32), (4, 1))
    data = encode(Image.fromarray(ramp), "TIFF")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    row = np.asarray(read_image(data))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) > 0)


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (80, 40), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 80, 20))  # red top half, blue bottom half
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    upright = read_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert upright.size == (40, 80)
    right, left = upright.getpixel((35, 40)), upright.getpixel((4, 40))
    assert right[0] > 200 and right[2] < 50, right  # the stored top is now on the right
    assert left[2] > 200 and left[0] < 50, left


def test_transparency_goes_onto_white():
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 10, 10))
    image = read_image(encode(rgba, "PNG"))
    assert image.getpixel((5, 5)) == (255, 0, 0) and image.getpixel((15, 5)) == (255, 255, 255)
    palette = Image.new("P", (20, 10), 1)
    palette.putpalette([255, 0, 0, 0, 0, 0])
    palette.paste(0, (0, 0, 10, 10))  # index 0 red on the left, index 1 (transparent black) on the right
    for format in ("GIF", "PNG"):
        image = read_image(encode(palette, format, transparency=1))
        assert image.getpixel((15, 5)) == (255, 255, 255) and image.getpixel((5, 5)) == (255, 0, 0), format


def test_grayscale_and_palette_become_rgb():
    gray = Image.fromarray(skimage.data.camera())
    image = read_image(encode(gray, "PNG"))
    assert image.mode == "RGB"
    r, g, b = (np.asarray(image)[..., i] for i in range(3))
    np.testing.assert_array_equal(r, skimage.data.camera())
    assert np.array_equal(r, g) and np.array_equal(g, b)
    colour, colours = patches()
    paletted = read_image(encode(colour.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG"))
    assert patch_centres(paletted, len(colours)) == colours


def test_preprocess_matches_timm_for_lite0():
    spec = get_spec("tf_efficientnet_lite0")
    image = read_image(sample_images()["chelsea"])
    config = timm.data.resolve_data_config({}, model=build_model(spec.name))
    expected = timm.data.create_transform(**config)(image)
    ours = preprocess(image, spec)
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_image_input_gives_a_batch_for_each_architecture():
    photo = sample_images()["coffee"]
    batch, image = image_input(photo, get_spec("lenet5"))
    assert batch.shape == (1, 1, 32, 32) and image.size == (600, 400)
    batch, _ = image_input(photo, get_spec("inception_v3"))
    assert batch.shape == (1, 3, 299, 299)
    assert -2.2 < batch.min() < batch.max() < 2.7
