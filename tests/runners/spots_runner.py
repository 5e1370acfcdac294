"""A detection-style runner (team `spots`): finds dark spots on a bright image and answers with boxes.

Its answer has no single `label`, `score` or `confidence` (a detector's has one per box): the service must take it
as it is. It is also the example of a runner that reads `extra`: `min_score` (how dark a spot must be, 0..1, default
0.5) and `max_detections` (default 100). Serve it with TEAM=spots RUNNER_MODULE=tests.runners.spots_runner.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image

TEAM = "spots"
GRID = 8  # the image is cut into GRID x GRID cells; a dark cell is a detection


class SpotsDetector:
    model_name = "spots_grid_detector"

    def __init__(self, weights_path: str | None = None, model_tag: str | None = None) -> None:
        self.model_tag = model_tag or "grid-v1"

    def run(
        self, image_bytes_or_uri: Any, model_tag: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        options = extra or {}
        min_score = float(options.get("min_score", 0.5))
        max_detections = int(options.get("max_detections", 100))
        gray = np.asarray(Image.open(io.BytesIO(image_bytes_or_uri)).convert("L"), dtype=np.float32) / 255.0
        height, width = gray.shape
        detections: list[dict[str, Any]] = []
        for row in range(GRID):
            for col in range(GRID):
                y0, y1 = row * height // GRID, (row + 1) * height // GRID
                x0, x1 = col * width // GRID, (col + 1) * width // GRID
                darkness = 1.0 - float(gray[y0:y1, x0:x1].mean())
                if darkness >= min_score:
                    detections.append({"label": "spot", "score": round(darkness, 4), "box": [x0, y0, x1, y1]})
        detections.sort(key=lambda d: -d["score"])
        return {
            "detections": detections[:max_detections],
            "count": min(len(detections), max_detections),
            "options": {"min_score": min_score, "max_detections": max_detections},
            "latency_ms_model": (time.perf_counter() - started) * 1000.0,
        }


RUNNER = SpotsDetector
