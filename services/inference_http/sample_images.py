"""Images the service makes for itself: warm-up's sample and the compile check's inputs."""

from __future__ import annotations

import io

import torch
from PIL import Image


def photo_like_jpeg(seed: int = 0, size: int = 320) -> bytes:
    """A photo-sized JPEG with real entropy (a flat image would decode unrealistically fast): warm-up's sample
    (seed 0) and the compiled forward pass's check images (compile_check.py)."""
    gradient = torch.linspace(0, 255, size).to(torch.uint8)
    noise = torch.randint(0, 64, (size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    shift = seed * 37 % 256
    pixels = noise + gradient[None, :, None] // 2 + gradient[:, None, None] // 4 + shift  # uint8: wraps around
    out = io.BytesIO()
    Image.fromarray(pixels.numpy(), "RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()
