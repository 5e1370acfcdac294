"""Make stand-in ResNet-50 weights: torchvision's architecture, random initialisation with a fixed seed.

    python -m adapters.resnet50_weights --out weights/resnet50.pt

The `resnet50` team stands in for the heavy GPU models real teams run (and drives the benchmarks): what
matters is the shape of the work, not the predictions. Nothing is downloaded: a team with real ImageNet
weights mounts its own state dict at the same path.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torchvision.models import resnet50

SEED = 0


def make_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return resnet50(weights=None).eval().state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("weights/resnet50.pt"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; leaving it alone (delete it to make new weights)")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    torch.save(make_state_dict(args.seed), tmp)
    os.replace(tmp, args.out)
    print(f"saved random-init ResNet-50 weights (seed {args.seed}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
