#!/usr/bin/env bash
# Issue 19's table on a lent GPU machine in one call: the service before the scheduler (74594fa^) and of this
# checkout in one run beside the same GPU's ceilings (bench/gpu_run.sh -> bench/gpu_service.py), then tests/gpu with
# the time left (about 450 s in all). Everything lands in $OUT: bench.log, gpu_service.json, gpu_service.log, gpu_tests.log.
#
# Layout it expects (DEVICE_DIR, default: two folders above this script), made on the development machine inside
# the git-ignored .device/ of the checkout the device tool sends:
#   .device/old      git archive 74594fa^ | tar -x -C .device/old      (main before the scheduler merge)
#   .device/new      git -C <this checkout> archive HEAD | tar -x -C .device/new      (this script is in it)
#   .device/wheels   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#                      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
#                      -d .device/wheels <fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv
#                      uvicorn httptools orjson obstore minio argon2-cffi argon2-cffi-bindings pycryptodome
#                      annotated-types typing-inspection annotated-doc anyio typing_extensions confluent-kafka,
#                      each ==its version in requirements.lock>
#   .device/minio.xz strip -o /tmp/minio ~/.cache/imagery/minio/*/minio && xz -T2 -6 -c /tmp/minio > .device/minio.xz
# then: run(command="bash .device/new/bench/gpu_issue19.sh", carry=[".device"], timeout_s=480)   (about 50 MB)
# Arguments go on to bench/gpu_service.py after the GPU's own, so they override them. The rehearsal on a CPU machine
# (the same steps, nvJPEG and CUDA streams aside; wheels for its Python, and `python3` one with torch on PATH):
#   OUT=/tmp/rehearsal bash .device/new/bench/gpu_issue19.sh --device cpu --secs 4 --json-conc '[16]' \
#     --batch-runs '[[8, 4]]' --gen-procs 2
set -uo pipefail
new=$(cd "$(dirname "$0")/.." && pwd)
export DEVICE_DIR=${DEVICE_DIR:-$(cd "$new/.." && pwd)} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
cd "$new"
t0=$(date +%s)
nproc; python3 -c "import torch, torchvision, sys; print(sys.version.split()[0], torch.__version__, torchvision.__version__)"
timeout 395 bash bench/gpu_run.sh --secs 6 --json-conc '[252]' --batch-runs '[[32, 24]]' --configs "[
  {\"SERVICE_ROOT\": \"$DEVICE_DIR/old\", \"MAX_BATCH_SIZE\": \"64\"},
  {\"MAX_BATCH_SIZE\": \"128\"},
  {\"IF_FAILED\": true, \"MAX_BATCH_SIZE\": \"128\", \"COMPILE\": \"off\"}]" "$@" > "$OUT/bench.log" 2>&1
echo "bench rc=$? after $(( $(date +%s) - t0 ))s"
grep -E "ready in|did not start|ceiling|failed|Traceback" "$OUT/bench.log" | cut -c1-400
left=$(( 445 - ($(date +%s) - t0) ))
echo "left for tests/gpu: ${left}s"
ready() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/minio/health/ready', timeout=1)" 2>/dev/null; }
if [ "$left" -gt 50 ]; then
  export PYTHONPATH=/tmp/site:$PWD IMAGERY_TEST_STACK=running
  if ! ready; then
    mkdir -p /tmp/minio-tests
    MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minioadmin setsid /tmp/minio server /tmp/minio-tests \
      --address 127.0.0.1:9000 --console-address 127.0.0.1:9001 --quiet >/dev/null 2>&1 &
    for _ in $(seq 100); do ready && break; sleep 0.2; done
  fi
  timeout "$left" python3 -m pytest tests/gpu -v -p no:cacheprovider --durations=0 > "$OUT/gpu_tests.log" 2>&1
  echo "tests/gpu rc=$?"
  grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/gpu_tests.log" | tail -12
fi
sed -n '/^## Issue 19/,$p' "$OUT/bench.log"
