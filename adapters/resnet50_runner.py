"""Team `resnet50`: torchvision's ResNet-50 classifier, the stand-in for heavy GPU models and benchmarks.

Weights are a state dict at `WEIGHTS_PATH` (default weights/resnet50.pt): ImageNet weights if a team mounts
them, otherwise the random-init ones from `python -m adapters.resnet50_weights`. Nothing is fetched from a hub.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models import ResNet50_Weights, resnet50

from adapters import WEIGHTS_DIR
from adapters.base import TorchClassifierRunner, existing_file

TEAM = "resnet50"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "resnet50.pt"
_IMAGENET = ResNet50_Weights.IMAGENET1K_V2.meta  # class names ship inside torchvision; no download


class ResNet50Runner(TorchClassifierRunner):
    model_name = "resnet50"
    labels = tuple(_IMAGENET["categories"])
    input_size = (224, 224)
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, weights_path: str | None = None, model_tag: str | None = None) -> None:
        path = existing_file(weights_path or DEFAULT_WEIGHTS)
        super().__init__(path, model_tag)
        model = resnet50(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model = model.eval()

    def extra_fields(self, probs: torch.Tensor) -> dict[str, Any]:
        return self.batch_extra_fields(probs[None])[0]

    def batch_extra_fields(self, probs: torch.Tensor) -> list[dict[str, Any]]:
        top = probs.topk(5, dim=1)  # one call for the batch, not one per image
        labels = self.labels
        return [
            {"top5": [{"label": labels[index], "score": score} for score, index in zip(values, indices, strict=True)]}
            for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]


RUNNER = ResNet50Runner
