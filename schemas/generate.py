"""Write (or, with --check, verify) the JSON Schema files generated from the pydantic contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas import (
    BatchRequest,
    BatchResponse,
    DeadLetter,
    ErrorBody,
    ImageMessage,
    InferenceResult,
    InferRequest,
    InferResponse,
)
from schemas.inference_api import RunnerOutput

HERE = Path(__file__).parent

# file stem -> model; the stems are what other languages and tools read
CONTRACTS: dict[str, type[BaseModel]] = {
    "image_message": ImageMessage,
    "inference_result": InferenceResult,
    "dead_letter": DeadLetter,
    "infer_request": InferRequest,
    "infer_response": InferResponse,
    "batch_request": BatchRequest,
    "batch_response": BatchResponse,
    "error_body": ErrorBody,
    "runner_output": RunnerOutput,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(stem: str) -> Path:
    return HERE / f"{stem}.schema.json"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for stem, model in CONTRACTS.items():
        path, text = schema_path(stem), render(model)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text)
    if check and stale:
        print(f"stale schema files (run `python -m schemas.generate`): {', '.join(stale)}", file=sys.stderr)
        return 1
    updated = f", updated {stale}" if stale and not check else ""
    print(("checked" if check else "wrote") + f" {len(CONTRACTS)} schemas" + updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
