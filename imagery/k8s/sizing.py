"""How many partitions, task slots, service replicas and GPUs a target rate needs, from measured figures only.

Each figure is a row of bench/RESULTS.md (the section is named beside it); what is chosen, not measured, is the
headroom, and it is named as such. `imagery k8s size --rate N` prints the plan; the README's sizing table is its
output for 1,000 and 50,000 images/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["process", "thread"]

# The dispatcher's CPU per message (JVM + Python worker), against a stand-in service, 32 items per request,
# parallelism 2: "Dispatcher pace vs Flink SQL passthrough (bursts of 10,000)", 2026-12-05, 2-core AMD EPYC.
# The thread figure is the former record-at-a-time thread mode's; the grouped one that replaced it cost less than
# process mode in one run at p=1 and 1 item per request (0.525 against 0.715 ms: "Issue 28", run B), so it
# over-provisions until the p=2, 32-item row is measured again.
DISPATCHER_CPU_MS_PER_MSG: dict[Mode, float] = {"process": 0.151 + 0.109, "thread": 0.445}
# One GPU's service: ResNet-50, 640x480 JPEGs from MinIO, /infer_batch (24 clients x 32 items), 8 workers:
# "Goal 1 (issue 10): resnet50 service on NVIDIA H100 80GB HBM3", 2026-11-23 (the newest GPU figure; the
# scheduler of issue 19 has no GPU figure yet).
SERVICE_IMG_PER_S_PER_GPU = 5688.0
SERVICE_P50_S_AT_SATURATION = 0.1153  # the same row's p50
GPU_MEASURED_ON = "NVIDIA H100 80GB HBM3, ResNet-50, /infer_batch"
# Chosen, not measured: run every part at most at this share of its measured rate, so that a backlog (after a
# restore, an upgrade, an outage) drains at the remaining share instead of growing.
HEADROOM = 0.7
# Chosen: twice the parallelism in partitions (Kafka adds partitions but never removes them; a job rescales up to
# its partitions through a savepoint, README "Restarts, crashes and savepoints"), a power of two, at least 4.
PARTITIONS_PER_SUBTASK = 2
DEFAULT_CAPACITY = 64  # --capacity's default (streaming/dispatch/config.py)


@dataclass(frozen=True)
class Plan:
    rate: float
    mode: Mode
    dispatcher_cores: float  # measured CPU the rate costs
    parallelism: int  # subtasks = task slots of one CPU each
    partitions: int
    capacity: int  # --capacity: images in flight per subtask (Little's law)
    gpus: int  # = service replicas (one GPU each)


def plan(rate: float, mode: Mode = "thread") -> Plan:
    cores = rate * DISPATCHER_CPU_MS_PER_MSG[mode] / 1000
    parallelism = max(1, math.ceil(cores / HEADROOM))
    partitions = max(4, 2 ** math.ceil(math.log2(parallelism * PARTITIONS_PER_SUBTASK)))
    # in flight = rate x time in the service (Little's law), at twice the p50 for the tail, spread over subtasks
    capacity = max(DEFAULT_CAPACITY, math.ceil(rate * 2 * SERVICE_P50_S_AT_SATURATION / parallelism))
    gpus = max(1, math.ceil(rate / (SERVICE_IMG_PER_S_PER_GPU * HEADROOM)))
    return Plan(rate, mode, cores, parallelism, partitions, capacity, gpus)
