"""Decoding: header-only probing, refusing bombs and non-images, and CPU decode to the model's size."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
import torch
from PIL import Image

from adapters.fruit_defect.samples import make_image
from services.inference_http import decode
from services.inference_http.errors import DecompressionBomb, NotAnImage, TooCostlyToDecode, UnsupportedImageFormat
from services.inference_http.settings import ServiceSettings
from tests.hostile_inputs import progressive_jpeg_with_scans

LIMIT = 50_000_000
SCAN_LIMIT = ServiceSettings().max_jpeg_scan_pixels


def encode(fmt: str, size=(64, 48), mode="RGB", **params) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 128).save(out, format=fmt, **params)
    return out.getvalue()


def png_declaring(width: int, height: int, rows: int = 4) -> bytes:
    """A valid PNG header that declares `width` x `height` with only a few rows of (zero) data after it."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = zlib.compress(b"\0" * ((width + 1) * rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is rewritten to claim `width` x `height`."""
    data = bytearray(encode("JPEG", (16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_supported_formats_decode_to_the_model_size(fmt):
    data = encode(fmt)
    info = decode.probe(data, LIMIT)
    assert (info.width, info.height) == (64, 48)
    image = decode.decode_cpu(data, (32, 40), LIMIT)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 40)


def test_greyscale_and_rgba_become_rgb():
    for mode, fmt in (("L", "PNG"), ("L", "JPEG")):
        assert tuple(decode.decode_cpu(encode(fmt, mode=mode), (8, 8), LIMIT).shape) == (3, 8, 8)
    rgba = io.BytesIO()
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(rgba, format="PNG")
    assert tuple(decode.decode_cpu(rgba.getvalue(), (8, 8), LIMIT).shape) == (3, 8, 8)


def test_a_fruit_photo_keeps_its_colours():
    image = decode.decode_cpu(make_image("clean", 1), (112, 112), LIMIT)
    assert image.float().std() > 10  # a real picture, not a flat fill


@pytest.mark.parametrize("data", [b"", b"hello, world", b"\x00" * 1000, b"%PDF-1.7\n..."])
def test_non_images_are_refused(data):
    with pytest.raises(NotAnImage) as err:
        decode.probe(data, LIMIT)
    assert err.value.status == 415 and err.value.stage == "decode"


def test_an_image_format_we_do_not_serve_is_refused():
    with pytest.raises(UnsupportedImageFormat) as err:
        decode.probe(encode("ICO", (32, 32)), LIMIT)
    assert err.value.status == 415 and err.value.type == "unsupported_image_format"


def test_a_corrupt_body_behind_a_valid_header_is_refused():
    data = bytearray(encode("PNG", (64, 64)))
    data[60:] = b"\x00" * (len(data) - 60)  # keep the header, break the compressed pixels
    decode.probe(bytes(data), LIMIT)
    with pytest.raises(NotAnImage):
        decode.decode_cpu(bytes(data), (8, 8), LIMIT)


@pytest.mark.parametrize("data", [png_declaring(8000, 8000), jpeg_declaring(9000, 9000), png_declaring(60_000, 60_000)])
def test_decompression_bombs_are_refused_from_the_header(data):
    with pytest.raises(DecompressionBomb) as err:
        decode.probe(data, LIMIT)
    assert err.value.status == 415 and err.value.type == "decompression_bomb"
    with pytest.raises(DecompressionBomb):
        decode.decode_cpu(data, (8, 8), LIMIT)


def test_the_pixel_limit_is_the_setting():
    data = encode("PNG", (100, 100))
    decode.probe(data, 10_000)
    with pytest.raises(DecompressionBomb, match="10000 pixels, over the limit of 9999"):
        decode.probe(data, 9_999)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_corrupted_files_never_escape_as_anything_but_415(fmt):
    """Random byte flips and truncations: each one decodes or is a NotAnImage; nothing else, no crash."""
    import random

    base = make_image("defect", 3)
    if fmt != "JPEG":
        out = io.BytesIO()
        Image.open(io.BytesIO(base)).save(out, format=fmt)
        base = out.getvalue()
    rng = random.Random(fmt)
    for _ in range(40):
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(2, len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(10, len(data))]
        try:
            image = decode.decode_cpu(bytes(data), (16, 16), LIMIT)
        except NotAnImage:
            continue
        assert tuple(image.shape) == (3, 16, 16)


def test_scans_are_counted_after_the_header_and_not_inside_an_exif_thumbnail():
    thumbnail = encode("JPEG", (16, 16))
    photo = io.BytesIO()
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    exif = image.getexif()
    exif[0x010E] = "with a thumbnail"
    image.save(photo, "JPEG", progressive=True, exif=exif.tobytes() + thumbnail)  # an APP1 holding a JPEG
    baseline, progressive = encode("JPEG"), encode("JPEG", progressive=True)
    assert decode.jpeg_scans(baseline) == 1
    assert 2 <= decode.jpeg_scans(progressive) <= 12
    assert decode.jpeg_scans(photo.getvalue()) == decode.jpeg_scans(progressive)
    assert decode.jpeg_scans(progressive_jpeg_with_scans(300, (64, 48))) == 300


def test_a_jpeg_whose_scans_would_cost_minutes_is_refused_before_decoding():
    hostile = progressive_jpeg_with_scans(3000)  # 70 KB; ~9 s of CPU here if decoded
    started = time.perf_counter()
    with pytest.raises(TooCostlyToDecode, match="3000 scans"):
        decode.decode_cpu(hostile, (64, 64), LIMIT, SCAN_LIMIT)
    assert time.perf_counter() - started < 1.0
    ordinary = encode("JPEG", (4000, 3000), progressive=True)  # 12 MP, ~10 scans: a photo
    assert decode.probe(ordinary, LIMIT, SCAN_LIMIT).width == 4000
