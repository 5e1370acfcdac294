"""Inputs made to hurt: shared by the unit, integration and end-to-end tests of the poison-pill rule."""

from __future__ import annotations

import io

from PIL import Image


def progressive_jpeg_with_scans(scans: int, size: tuple[int, int] = (2000, 1500)) -> bytes:
    """A valid progressive JPEG of a flat colour whose last scan is repeated until it has `scans` scans.

    Each repeated scan is a few bytes, but the decoder makes one more pass over every block for each: with
    3,000 scans of 3 megapixels a 70 KB file costs about 9 s of CPU to decode (libjpeg-turbo only warns)."""
    out = io.BytesIO()
    Image.new("RGB", size, (120, 180, 60)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    have = data.count(b"\xff\xda")
    return data[:end] + data[last_scan:end] * (scans - have) + b"\xff\xd9"
