"""Whether a compiled forward pass may serve: it is checked against the eager one at warm-up (forward.LocalPath),
and dropped for it when they disagree."""

from __future__ import annotations

import logging

import torch

from adapters.base import BatchRunner, CompilableRunner, Runner
from services.inference_http import decode
from services.inference_http.sample_images import photo_like_jpeg

log = logging.getLogger(__name__)

# Probabilities. A margin for fp16 on a GPU, where eager and compiled kernels may round differently: not measured on
# a GPU yet; on the CPU the two differed by 1.3e-06 on 16 images (bench/RESULTS.md, "Issue 19 on the CPU").
COMPILE_TOLERANCE = 0.02
COMPILE_CHECK_IMAGES = 16


def check_compiled(
    runner: Runner, device: torch.device, limits: tuple[int, int], backend: str, mode: str, sample: bytes
) -> str:
    """The compiled forward pass against the eager one on `COMPILE_CHECK_IMAGES` photo-like images: every
    probability within COMPILE_TOLERANCE, and the same top-1 wherever eager's top-1 leads its runner-up by more
    than that (closer than it, fp16 rounding decides a tie either way). Returns the `forward` that /readyz reports;
    on a mismatch the runner is put back on its eager pass, which serves."""
    assert isinstance(runner, CompilableRunner) and isinstance(runner, BatchRunner)
    size = (int(runner.input_size[0]), int(runner.input_size[1]))
    images = [decode.decode_cpu(sample, size, *limits)] + [
        decode.decode_cpu(photo_like_jpeg(seed), size, *limits) for seed in range(1, COMPILE_CHECK_IMAGES)
    ]
    batch = torch.stack(images).to(device)
    with torch.inference_mode():
        eager = runner.probabilities(batch).float()
        try:
            compiled = runner.forward_scores(batch).float()
        except Exception:  # noqa: BLE001  (as at warm-up: the eager pass serves)
            log.exception("the compiled forward pass failed on the check images; serving the eager one")
            runner.eager_forward()
            return f"eager (compiling with {backend} failed on the check images: see the log)"
    diff = float((compiled - eager).abs().max())
    top = eager.topk(min(2, eager.shape[1]), dim=1).values
    decisive = (top[:, 0] - top[:, -1]) > COMPILE_TOLERANCE
    same_top1 = bool(((compiled.argmax(1) == eager.argmax(1)) | ~decisive).all())
    if diff <= COMPILE_TOLERANCE and same_top1:
        return f"compiled ({backend}, {mode}): max |p - p_eager| {diff:.2g} on {len(images)} images, the same top-1"
    runner.eager_forward()
    log.warning(
        "the compiled forward pass differs from eager (max |dp| %.3g, same top-1: %s); serving eager", diff, same_top1
    )
    return f"eager (compiled {backend} differed: max |p - p_eager| {diff:.2g}, same top-1: {same_top1})"
