"""Team `fruit`: tells a clean fruit from one with rot spots (the worked example of an adapter).

The weights are TorchScript made by `python -m adapters.fruit_defect.train`; the file carries its own labels,
input size and normalisation (see adapters/fruit_defect/model.py), so this runner hard-codes none of them.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch

from adapters.base import WEIGHTS_DIR, TorchClassifierRunner, existing_file
from adapters.fruit_defect.train import META_NAME

TEAM = "fruit"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "fruit_cls_best.ts"


class FruitRunner(TorchClassifierRunner):
    model_name = "fruit_defect_cnn"

    def __init__(self, weights_path: str | None = None, model_tag: str | None = None) -> None:
        super().__init__(existing_file(weights_path or DEFAULT_WEIGHTS), model_tag)
        extra = {META_NAME: ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's deprecation notice
            self.model = torch.jit.load(self.weights_path, map_location="cpu", _extra_files=extra).eval()
        meta = json.loads(extra[META_NAME] or "{}")
        self.labels = tuple(meta["labels"])
        self.input_size = tuple(meta["input_size"])
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.model_tag = model_tag or meta.get("code_hash")

    def to_device(self, device: torch.device) -> None:
        super().to_device(device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            # folds the batch norms into the convolutions: fewer kernels per forward pass
            self.model = torch.jit.freeze(self.model)

    def extra_fields(self, probs: torch.Tensor) -> dict[str, Any]:
        return {"probabilities": dict(zip(self.labels, probs.tolist(), strict=True))}


RUNNER = FruitRunner
