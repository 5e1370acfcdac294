"""A benchmark stand-in for the inference service: canned answers in the service's real response shapes, no model,
no storage. It measures the dispatcher, never a model; do not deploy it.

    .venv/bin/python bench/standin.py --port 8099

/readyz, /infer_json (one InferResponse) and /infer_batch (one BatchItemOk per item) answer at once; the answer
echoes each item's bucket and key, so the dispatcher's results are the shape a real team's would be.
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn

from schemas import INFER_BATCH_ROUTE, INFER_JSON_ROUTE, READYZ_ROUTE, InferResponse, Timings

TEAM = "fruit"
CANNED = InferResponse(
    label="clean",
    score=0.93,
    confidence=0.93,
    latency_ms_model=0.0,
    team=TEAM,
    bucket="b",
    key="k",
    model_name="stand-in",
    batch_size=1,
    timings=Timings(fetch_ms=0, decode_ms=0, queue_ms=0, infer_ms=0, total_ms=0),
).model_dump()
JSON = [(b"content-type", b"application/json")]


def _answer(item: dict, batch_size: int) -> dict:
    return {**CANNED, "bucket": item.get("bucket"), "key": item.get("key"), "batch_size": batch_size}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path, status = scope["path"], 200
    payload: dict[str, object]
    if path == READYZ_ROUTE:
        payload = {"ready": True}
    elif path == INFER_JSON_ROUTE and body:
        payload = _answer(orjson.loads(body), 1)
    elif path == INFER_BATCH_ROUTE and body:
        items = orjson.loads(body)["items"]
        payload = {"items": [{"ok": True, "result": _answer(item, len(items))} for item in items]}
    else:
        status = 422
        payload = {"error": {"type": "bad_request", "message": "stand-in: empty body", "stage": "validate"}}
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
