"""Decode and resize, the one implementation shared by training, the runners' `run()` and the service.

A model sees at serving time exactly the pixels it was trained on only if both sides resize the same way,
so everything that turns bytes into a model-sized uint8 tensor goes through here.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

# JPEG and WebP are decoded by torchvision (libjpeg-turbo, libwebp); everything else PIL reads goes through PIL.
# Not PNG: torchvision 0.29's decode_png crashes the process (SIGSEGV) on a corrupt IDAT, where PIL raises.


def _is_native(data: bytes | bytearray | memoryview) -> bool:
    head = bytes(data[:12])
    return head.startswith(b"\xff\xd8\xff") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def decode_rgb(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Encoded image -> uint8 RGB tensor [3, H, W] on the CPU (the first frame of an animation).

    Raises RuntimeError, OSError or ValueError (from the decoder) when the bytes do not decode."""
    if _is_native(data):
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    else:
        with Image.open(io.BytesIO(data)) as pil:
            pil.seek(0)
            image = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).contiguous()
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> uint8 [..., 3, size[0], size[1]]: bilinear with antialiasing, aspect not kept."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.resize(image, list(size), antialias=True)


def to_model_input(
    batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised `dtype` on the same device; channels_last on CUDA (faster convs)."""
    scale = torch.tensor(std, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    shift = torch.tensor(mean, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    out = ((batch.float() - shift) / scale).to(dtype)
    if batch.is_cuda:
        out = out.contiguous(memory_format=torch.channels_last)
    return out
