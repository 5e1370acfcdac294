"""Bytes -> model-sized uint8 images, refusing what is not an image or declares too many pixels.

`probe` reads only the header (PIL parses lazily), so a decompression bomb is refused from the dimensions
it declares, before a single pixel is decoded. On the CPU each image is decoded and resized in a worker
thread as soon as it arrives; on a GPU the JPEGs of a whole batch are decoded together by nvJPEG.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass
from typing import cast

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from adapters import imaging
from services.inference_http.errors import (
    DecompressionBomb,
    NotAnImage,
    ServiceError,
    TooCostlyToDecode,
    UnsupportedImageFormat,
)

log = logging.getLogger(__name__)

# PIL's own bomb guard (a warning, then an error at twice its limit) is redundant with the explicit limit in
# `probe`, which refuses earlier; keep the warning out of the logs.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a camera JPEG with extra frames; its first frame is a JPEG
SUPPORTED_FORMATS = JPEG_FORMATS | {"PNG", "WEBP", "GIF", "BMP", "TIFF"}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


# the start-of-scan marker; re finds it in an 80 KB photo 2.5 times faster than bytes.count (measured: 35 vs 88 us),
# and this runs for every JPEG the service takes (the scan count was 20.9% of one worker's GIL samples on an H100
# under load: bench/RESULTS.md, "Issue 10, step by step")
_SOS = re.compile(b"\xff\xda")


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds. The segments before the first scan are skipped by their lengths
    (an EXIF thumbnail is a JPEG of its own); after it, every SOS marker counts: inside entropy-coded data a 0xFF
    byte is always followed by 0x00 or a restart marker, so b"\xff\xda" is a marker there."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return 0  # not a well-formed header: the decoder will say so
        marker = data[i + 1]
        if marker == 0xFF or marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # fill byte, markers without length
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:
            return len(_SOS.findall(data, i))
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return 0


def probe(data: bytes, max_pixels: int, max_scan_pixels: int | None = None) -> ImageInfo:
    """The image's format and size from its header; NotAnImage / DecompressionBomb / TooCostlyToDecode if it must
    be refused. `max_scan_pixels` bounds a JPEG's scans times its pixels: each progressive scan is one more pass
    over every block, and thousands of tiny scans make a small file cost minutes of CPU that no deadline can stop
    once the decoder runs."""
    if not data:
        raise NotAnImage("the object is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = ImageInfo(image.format or "unknown", *image.size)
    except Image.DecompressionBombError as exc:
        raise DecompressionBomb(f"refused before decoding: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage(f"not an image format we know ({len(data)} bytes starting {data[:8]!r})") from exc
    except Exception as exc:  # parsers of hostile bytes raise all kinds of things; all mean "not an image"
        raise NotAnImage(f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    if info.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageFormat(
            f"{info.format} images are not supported; send one of {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}"
        )
    if info.width * info.height > max_pixels:
        raise DecompressionBomb(
            f"refused before decoding: the header declares {info.width}x{info.height} = "
            f"{info.width * info.height} pixels, over the limit of {max_pixels}"
        )
    if info.width < 1 or info.height < 1:
        raise NotAnImage(f"the header declares an empty image ({info.width}x{info.height})")
    if max_scan_pixels is not None and info.format in JPEG_FORMATS:
        scans = jpeg_scans(data)
        if scans * info.width * info.height > max_scan_pixels:
            raise TooCostlyToDecode(
                f"refused before decoding: {scans} scans of {info.width}x{info.height} pixels "
                f"(a photo has about 10); scans x pixels is over the limit of {max_scan_pixels}"
            )
    return info


def decode_cpu(data: bytes, size: tuple[int, int], max_pixels: int, max_scan_pixels: int | None = None) -> torch.Tensor:
    """Probe, decode and resize on the CPU: uint8 [3, *size] (blocking: call from a thread)."""
    return decode_cpu_probed(data, size, max_pixels, max_scan_pixels)[1]


def decode_cpu_probed(
    data: bytes, size: tuple[int, int], max_pixels: int, max_scan_pixels: int | None = None
) -> tuple[ImageInfo, torch.Tensor]:
    """`decode_cpu`, and what the header said."""
    info = probe(data, max_pixels, max_scan_pixels)
    try:
        image = imaging.decode_rgb(data)
    except Exception as exc:  # as in probe: whatever the decoder raises, the bytes are not a usable image
        raise NotAnImage(f"the {info.format} data does not decode ({type(exc).__name__}: {exc})") from exc
    return info, imaging.resize(image, size)


def decode_batch_cuda(
    items: list[tuple[bytes, ImageInfo]], size: tuple[int, int], device: torch.device
) -> list[torch.Tensor | ServiceError]:
    """Decode a batch on the GPU: the JPEGs together through nvJPEG, the rest on the CPU and copied over.

    Returns, in order, uint8 [3, *size] tensors on `device`, or the NotAnImage for an item that does not
    decode. A JPEG nvJPEG cannot take (CMYK, some progressive files) falls back to the CPU decoder."""
    out: list[torch.Tensor | ServiceError | None] = [None] * len(items)
    decoded_at: dict[int, torch.Tensor] = {}
    jpegs = [i for i, (_, info) in enumerate(items) if info.format in JPEG_FORMATS]
    if jpegs:
        encoded = [torch.frombuffer(bytearray(items[i][0]), dtype=torch.uint8) for i in jpegs]
        try:
            decoded: list[torch.Tensor | None] = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # torchvision reports every decode failure as RuntimeError
            # one bad file fails the batched call: decode one by one to find it, keeping the good ones on the GPU
            decoded = []
            for tensor in encoded:
                try:
                    # one tensor in, one tensor out (decode_jpeg's return type covers the list form too)
                    decoded.append(cast(torch.Tensor, decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device)))
                except RuntimeError:
                    decoded.append(None)
        # images of one size (a camera's frames) are resized together: one batched kernel instead of one per image
        # (the same pixels: the resize treats each image of a batch alone)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in zip(jpegs, decoded, strict=True):
            if image is not None:
                by_shape.setdefault(tuple(image.shape), []).append(i)
                decoded_at[i] = image
        for indices in by_shape.values():
            resized = imaging.resize(torch.stack([decoded_at[i] for i in indices]), size)
            for i, image in zip(indices, resized, strict=True):
                out[i] = image
    for i, (data, info) in enumerate(items):
        if out[i] is None:
            try:
                out[i] = imaging.resize(imaging.decode_rgb(data), size).to(device)
            except Exception as exc:
                out[i] = NotAnImage(f"the {info.format} data does not decode ({type(exc).__name__}: {exc})")
    return [image if image is not None else NotAnImage("the image did not decode") for image in out]
