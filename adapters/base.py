"""The runner protocol: what a team's adapter module provides, and what the inference service relies on.

An adapter is a module `adapters/<name>_runner.py` with two module-level names, `TEAM = "<team>"` and
`RUNNER = <class>`; the registry finds it by that file name alone (no central list to edit).

Every runner has one interface (`Runner`): constructed as `RUNNER(weights_path=None, model_tag=None)`,
called as `run(image_bytes_or_uri, model_tag=None, extra=None) -> dict`: any JSON object (a classifier's
`label`, `score`, `confidence` and `latency_ms_model` are recommended, and checked for type when present; a detector
answers with its boxes, a segmenter with its mask: schemas.inference_api.RunnerOutput). `extra` is the request's
own options (a message's `extra`). The service calls `run` one image at a time, from one thread.

A runner that also has the `BatchRunner` members lets the service do the heavy lifting: it decodes the images
(on the GPU when there is one), resizes them to `input_size`, stacks them into a uint8 batch on `device` and
makes one `run_batch` call for many concurrent requests (dynamic batching). `TorchClassifierRunner` below
implements all of it for an image classifier; a team's classifier only loads its model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from adapters import imaging

# The weights directory: /app/weights in the service's image (mounted there), <checkout>/weights in development.


@runtime_checkable
class Runner(Protocol):
    """The runner interface; every team's runner has it, and the registry and the service call only this."""

    def run(
        self, image_bytes_or_uri: Any, model_tag: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...


@runtime_checkable
class BatchRunner(Runner, Protocol):
    """A runner the service can batch: it takes decoded images, many at a time."""

    model_name: str
    model_tag: str | None
    input_size: tuple[int, int]  # (height, width) the service resizes every image to before `run_batch`
    device: torch.device

    def to_device(self, device: torch.device) -> None:
        """Move the model to `device` (fp16 and channels_last on CUDA); called once, before any `run_batch`."""

    def run_batch(
        self,
        images: torch.Tensor,
        model_tags: Sequence[str | None] | None = None,
        extras: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """uint8 RGB images [N, 3, *input_size] on `device` -> one result dict per image, in order.

        `model_tags` and `extras` are the requests' own, item by item (a runner serving one model may
        ignore the tags: the service reports the runner's `model_tag`, the model that really ran)."""


@runtime_checkable
class CompilableRunner(Protocol):
    """A batch runner whose forward pass the service may compile during warm-up (TorchClassifierRunner is one)."""

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The eager forward pass: uint8 images [N, 3, *input_size] on the device -> float32 scores [N, classes]."""

    def compile_forward(self, backend: str = "inductor", mode: str = "default") -> None:
        """From now on, run_batch runs `probabilities` compiled (torch.compile); it compiles at its first call."""

    def eager_forward(self) -> None:
        """Back to the eager `probabilities` (the compiled one failed its check)."""

    def forward_scores(self, images: torch.Tensor) -> torch.Tensor:
        """What run_batch runs: `probabilities`, compiled or not."""


def existing_file(path: str | Path) -> str:
    """`path` if it is a file; else FileNotFoundError naming it (torch's own errors for this vary)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    return str(path)


def read_image_source(image_bytes_or_uri: Any) -> bytes:
    """`run` takes bytes or a URI; a local path or file:// URI is read here. Object URIs
    (s3://) are the service's job: it fetches the bytes and passes them in."""
    if isinstance(image_bytes_or_uri, (bytes, bytearray, memoryview)):
        return bytes(image_bytes_or_uri)
    if hasattr(image_bytes_or_uri, "read"):
        return image_bytes_or_uri.read()
    text = str(image_bytes_or_uri)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"cannot open {text!r} here: pass the image's bytes (the service fetches objects)")
    return Path(text.removeprefix("file://")).read_bytes()


class TorchClassifierRunner:
    """An image classifier on torch, batchable. Subclasses set `labels`, `input_size`, `mean`, `std`,
    `model_name` and `self.model` (an eval-mode module on the CPU, taking normalised float images).

    Each result has `label` (top-1 class), `score` (its probability), `confidence` (top-1 minus top-2
    probability: how decisive the call was), `latency_ms_model` (this batch's forward pass), plus
    `extra_fields()`.
    """

    model_name: ClassVar[str] = "classifier"
    labels: Sequence[str]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model: torch.nn.Module

    def __init__(self, weights_path: str | None = None, model_tag: str | None = None) -> None:
        self.weights_path = weights_path
        self.model_tag = model_tag
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.forward_scores = self.probabilities

    def to_device(self, device: torch.device) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # fp16 halves memory traffic and uses tensor cores; channels_last is what cuDNN's fast kernels want
            self.dtype = torch.float16
            self.model = self.model.to(self.device).half().to(memory_format=torch.channels_last)
        else:
            self.dtype = torch.float32
            # channels_last on the CPU too: oneDNN's convolutions are faster in it (measured on a 2-core Xeon: the
            # fruit model 15.6 -> 5.3 ms at batch 32 and 0.74 -> 0.53 ms at batch 1; ResNet-50 1.2-1.9x), the same
            # outputs within 3e-5
            self.model = self.model.to(self.device).float().to(memory_format=torch.channels_last)

    def run(
        self, image_bytes_or_uri: Any, model_tag: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        image = imaging.resize(imaging.decode_rgb(read_image_source(image_bytes_or_uri)), self.input_size)
        return self.run_batch(image[None].to(self.device), [model_tag], [extra])[0]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 3, *input_size] on the device -> class probabilities, float32 [N, classes], on the
        device: normalisation, the model and the softmax, the part `compile_forward` compiles as one graph (so the
        normalisation and the softmax fuse into the kernels around them)."""
        x = imaging.to_model_input(images, self.mean, self.std, self.dtype)
        logits = self.model(x.contiguous(memory_format=torch.channels_last))  # (to_model_input did it on CUDA)
        return torch.softmax(logits.float(), dim=1)

    def compile_forward(self, backend: str = "inductor", mode: str = "default") -> None:
        """torch.compile `probabilities` for run_batch. Two compilations in all, not one per batch size: the first
        call specialises on its size (warm-up starts at 1), the second size makes torch recompile with the batch
        dimension alone dynamic (`dynamic=None`, automatic dynamic shapes; `dynamic=True` would make the image's
        height and width symbolic too), and every later size reuses that graph."""
        self.forward_scores = torch.compile(
            self.probabilities, backend=backend, mode=None if mode == "default" else mode
        )

    def eager_forward(self) -> None:
        self.forward_scores = self.probabilities

    @torch.inference_mode()
    def run_batch(
        self,
        images: torch.Tensor,
        model_tags: Sequence[str | None] | None = None,
        extras: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        started = time.perf_counter()
        probs = self.forward_scores(images).cpu()  # .cpu() waits for the GPU: the latency is real
        latency_ms = (time.perf_counter() - started) * 1000.0
        top = probs.topk(min(2, probs.shape[1]), dim=1)
        results = []
        extras = self.batch_extra_fields(probs)
        for values, indices, extra in zip(top.values.tolist(), top.indices.tolist(), extras, strict=True):
            runner_up = values[1] if len(values) > 1 else 0.0
            results.append(
                {
                    "label": self.labels[indices[0]],
                    "score": values[0],
                    "confidence": values[0] - runner_up,
                    "latency_ms_model": latency_ms,
                    **extra,
                }
            )
        return results

    def extra_fields(self, probs: torch.Tensor) -> dict[str, Any]:
        """The runner's own result fields for one image, from its class probabilities."""
        return {}

    def batch_extra_fields(self, probs: torch.Tensor) -> list[dict[str, Any]]:
        """`extra_fields` for every row of a batch's probabilities [N, classes]; a runner may override it to do
        the whole batch in a few tensor operations (per row, small tensor calls cost more than the work)."""
        return [self.extra_fields(row) for row in probs]
