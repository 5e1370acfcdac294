"""The fruit team's classifier: a small CNN that tells a clean fruit from one with rot spots.

The facts the runner needs at serving time (labels, input size, normalisation) are defined here once and
stored inside the TorchScript file by the trainer, so a weights file always carries its own preprocessing.
"""

from __future__ import annotations

import torch
from torch import nn

LABELS = ("clean", "defect")
INPUT_SIZE = (112, 112)  # (height, width): from a 256 px photo, a rot spot stays several pixels wide
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class FruitDefectNet(nn.Module):
    """Five stride-2 convolutions, then max and mean pooling side by side: a spot is a local event that mean
    pooling alone would wash out, while the mean keeps the context (skin colour, lighting)."""

    def __init__(self, width: int = 16, num_classes: int = len(LABELS)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            _block(4 * width, 4 * width),
            _block(4 * width, 4 * width),
        )
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([torch.amax(f, dim=(2, 3)), torch.mean(f, dim=(2, 3))], dim=1)
        return self.head(pooled)
