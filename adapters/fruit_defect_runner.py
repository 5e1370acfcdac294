"""Team `fruit`: tells a clean fruit from one with rot spots (the worked example of an adapter).

The weights are a state dict made by `python -m adapters.fruit_defect.train` (WEIGHTS_FORMAT); the file
carries its own labels, input size and normalisation (see adapters/fruit_defect/model.py), so this runner hard-codes
none of them. A TorchScript file of the same model (what the trainer wrote before torch 2.11 deprecated torch.jit)
still loads.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from adapters.base import TorchClassifierRunner, existing_file
from adapters.fruit_defect import DEFAULT_WEIGHTS, META_NAME, WEIGHTS_FORMAT
from adapters.fruit_defect.model import FruitDefectNet

TEAM = "fruit"


class FruitRunner(TorchClassifierRunner):
    model_name = "fruit_defect_cnn"

    def __init__(self, weights_path: str | None = None, model_tag: str | None = None) -> None:
        path = existing_file(weights_path or DEFAULT_WEIGHTS)
        super().__init__(path, model_tag)
        if _is_torchscript(path):
            self.model, meta = _load_torchscript(path)
        else:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or saved.get("format") != WEIGHTS_FORMAT:
                raise ValueError(f"{path} is not a fruit weights file ({WEIGHTS_FORMAT})")
            meta = json.loads(saved["meta"])
            model = FruitDefectNet(num_classes=len(meta["labels"]))
            model.load_state_dict(saved["state_dict"])
            self.model = _fold_batch_norms(model.eval())
        self.labels = tuple(meta["labels"])
        self.input_size = tuple(meta["input_size"])
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.model_tag = model_tag or meta.get("code_hash")

    def to_device(self, device: torch.device) -> None:
        super().to_device(device)
        if isinstance(self.model, torch.jit.ScriptModule):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                self.model = torch.jit.freeze(self.model)  # folds its batch norms, as _fold_batch_norms does

    def extra_fields(self, probs: torch.Tensor) -> dict[str, Any]:
        return {"probabilities": dict(zip(self.labels, probs.tolist(), strict=True))}


def _fold_batch_norms(model: FruitDefectNet) -> FruitDefectNet:
    """Each convolution absorbs the batch norm after it (eval mode: a fixed scale and shift): one kernel fewer per
    block in every forward pass, the same outputs (what torch.jit.freeze did for the TorchScript file)."""
    for block in model.features:
        if (
            isinstance(block, nn.Sequential)
            and isinstance(block[0], nn.Conv2d)
            and isinstance(block[1], nn.BatchNorm2d)
        ):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return model


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_torchscript(path: str) -> tuple[torch.jit.ScriptModule, dict]:
    extra = {META_NAME: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's deprecation notice
        model = torch.jit.load(path, map_location="cpu", _extra_files=extra).eval()
    return model, json.loads(extra[META_NAME] or "{}")


RUNNER = FruitRunner
