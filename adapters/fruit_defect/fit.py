"""The training itself (torch): data from the generator, a deterministic loop, a state dict out.

Run through `python -m adapters.fruit_defect.train`, which decides whether training is needed at all.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn

from adapters import imaging
from adapters.fruit_defect import WEIGHTS_FORMAT
from adapters.fruit_defect import model as fruit_model
from adapters.fruit_defect.samples import DEFAULT_SIZE, KINDS, make_image

TRAIN_FIRST_SEED = 0
VAL_FIRST_SEED = 1_000_000  # held out from training; tests use seeds from 2_000_000 on
MIN_VAL_ACCURACY = 0.98


def _make_jpeg(job: tuple[str, int]) -> bytes:
    return make_image(*job, size=DEFAULT_SIZE)


def make_datasets(counts_and_seeds: list[tuple[int, int]], workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each `(count, first_seed)`: `count` images, half of each kind, decoded and resized exactly as the
    service will. The worker processes only draw JPEGs (PIL + numpy): torch's thread pool does not survive
    a fork, so all torch work stays in this process."""
    jobs = [[(KINDS[i % 2], first + i) for i in range(count)] for count, first in counts_and_seeds]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        encoded = list(pool.map(_make_jpeg, [job for part in jobs for job in part], chunksize=32))
    datasets, at = [], 0
    for part in jobs:
        chunk = encoded[at : at + len(part)]
        images = [imaging.resize(imaging.decode_rgb(data), fruit_model.INPUT_SIZE) for data in chunk]
        at += len(part)
        labels = torch.tensor([fruit_model.LABELS.index(kind) for kind, _ in part])
        datasets.append((torch.stack(images), labels))
    return datasets


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip_h = torch.rand(batch.shape[0], generator=gen) < 0.5
    flip_v = torch.rand(batch.shape[0], generator=gen) < 0.5
    batch = torch.where(flip_h[:, None, None, None], batch.flip(3), batch)
    return torch.where(flip_v[:, None, None, None], batch.flip(2), batch)


def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    with torch.inference_mode():
        correct = 0
        for start in range(0, len(images), 256):
            x = imaging.to_model_input(images[start : start + 256], fruit_model.MEAN, fruit_model.STD)
            correct += int((net(x).argmax(1) == labels[start : start + 256]).sum())
    return correct / len(images)


def train(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    workers = max(1, min(4, os.cpu_count() or 1))
    t0 = time.monotonic()
    (train_x, train_y), (val_x, val_y) = make_datasets(
        [(args.train_count, TRAIN_FIRST_SEED), (args.val_count, VAL_FIRST_SEED)], workers
    )
    log(f"generated {len(train_x)} training and {len(val_x)} validation images in {time.monotonic() - t0:.1f}s")

    net = fruit_model.FruitDefectNet()
    steps_per_epoch = (len(train_x) + args.batch_size - 1) // args.batch_size
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(train_x), generator=gen)
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            x = imaging.to_model_input(_augment(train_x[idx], gen), fruit_model.MEAN, fruit_model.STD)
            loss = loss_fn(net(x), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        accuracy = evaluate(net, val_x, val_y)
        log(
            f"epoch {epoch}/{args.epochs}: loss {total / len(train_x):.4f}, validation accuracy {accuracy:.4f} "
            f"({time.monotonic() - t0:.0f}s)"
        )

    meta = {
        "model_name": "fruit_defect_cnn",
        "labels": list(fruit_model.LABELS),
        "input_size": list(fruit_model.INPUT_SIZE),
        "mean": list(fruit_model.MEAN),
        "std": list(fruit_model.STD),
        "val_accuracy": accuracy,
        "train_seconds": round(time.monotonic() - t0, 1),
        "torch": torch.__version__,
    }
    if accuracy < MIN_VAL_ACCURACY:
        raise SystemExit(f"validation accuracy {accuracy:.4f} is below {MIN_VAL_ACCURACY}: not saving the model")
    return net.eval(), meta


def save(net: nn.Module, meta: dict, path: Path) -> None:
    """The weights as a state dict with the metadata beside it (WEIGHTS_FORMAT), not TorchScript: torch.jit
    is deprecated in torch 2.11, and a state dict loads with `weights_only=True` (no code runs from the file)."""
    torch.save({"format": WEIGHTS_FORMAT, "meta": json.dumps(meta, indent=2), "state_dict": net.state_dict()}, path)
