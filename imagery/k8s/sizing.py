"""How many partitions, task slots, service replicas and GPUs a target rate needs, from measured figures only.

Each figure is a row of bench/RESULTS.md (the section is named beside it); what is chosen, not measured, is the
headroom, and it is named as such. `imagery k8s size --rate N` prints the plan; docs/kubernetes.md's sizing table is
its output for 1,000 and 50,000 images/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The dispatcher's CPU per message (its JVM, the Python inside it included), warm (30,000 messages before the
# measurement: a job runs for days), against a stand-in service, 32 items per request, parallelism 2:
# "Issue 28, continued", 2026-12-08, 2-core AMD EPYC. It moves with the host: measure on the cluster's own nodes
# before ordering (docs/kubernetes.md, "Sizing").
DISPATCHER_CPU_MS_PER_MSG = 0.573
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
# its partitions through a savepoint: docs/operating.md, "Restarts, crashes and savepoints"), a power of two, at
# least 4.
PARTITIONS_PER_SUBTASK = 2
DEFAULT_CAPACITY = 64  # --capacity's default (streaming/dispatch/config.py)


@dataclass(frozen=True)
class Plan:
    rate: float
    dispatcher_cores: float  # measured CPU the rate costs
    parallelism: int  # subtasks = task slots of one CPU each
    partitions: int
    capacity: int  # --capacity: images in flight per subtask (Little's law)
    gpus: int  # = service replicas (one GPU each)


def plan(rate: float) -> Plan:
    cores = rate * DISPATCHER_CPU_MS_PER_MSG / 1000
    parallelism = max(1, math.ceil(cores / HEADROOM))
    partitions = max(4, 2 ** math.ceil(math.log2(parallelism * PARTITIONS_PER_SUBTASK)))
    # in flight = rate x time in the service (Little's law), at twice the p50 for the tail, spread over subtasks
    capacity = max(DEFAULT_CAPACITY, math.ceil(rate * 2 * SERVICE_P50_S_AT_SATURATION / parallelism))
    gpus = max(1, math.ceil(rate / (SERVICE_IMG_PER_S_PER_GPU * HEADROOM)))
    return Plan(rate, cores, parallelism, partitions, capacity, gpus)
