#!/usr/bin/env bash
# bench/gpu_service.py on a bare GPU machine (Python 3.12 with torch, no network, no Java), from the repository root.
# DEVICE_DIR (default .device, git-ignored) holds what the machine lacks: $DEVICE_DIR/wheels (the service's wheels
# for Python 3.12 beyond torch), $DEVICE_DIR/minio.xz (the MinIO server `make setup` builds, stripped and
# xz-compressed). Extra arguments go to bench/gpu_service.py; figures land in $OUT (default /tmp).
#
# Issue 19's table, the code before (another checkout, e.g. `git archive main | tar -x -C ../old`) and after in one
# run, beside the same GPU's eager and compiled ceilings:
#   bash bench/gpu_run.sh --secs 6 --json-conc '[252]' --batch-runs '[[32, 24]]' \
#     --configs '[{"SERVICE_ROOT": "../old", "MAX_BATCH_SIZE": "64"}, {"MAX_BATCH_SIZE": "128"}]'
set -euo pipefail
DEVICE_DIR=${DEVICE_DIR:-.device}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$DEVICE_DIR"/wheels/*.whl $(ls "$DEVICE_DIR"/pyspy/*.whl 2>/dev/null) 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
[ -x /tmp/minio ] || { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open('/tmp/minio','wb'))" "$DEVICE_DIR/minio.xz"; chmod +x /tmp/minio; }
! command -v nvidia-smi >/dev/null || nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv,noheader
exec python3 bench/gpu_service.py --minio-binary /tmp/minio "$@"
