#!/usr/bin/env bash
# Goal 1 of issue 10 on a bare GPU machine (Python 3.12 with torch, no network, no Java), from the repository root
# with .device/ beside the code (git-ignored): .device/wheels (the service's wheels for Python 3.12 beyond torch),
# .device/minio.xz (the MinIO server `make setup` builds, stripped and xz-compressed). Extra arguments go to
# bench/gpu_service.py, e.g. --configs '[{"WORKERS": "8"}]'. Figures land in $OUT (default /tmp).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .device/wheels/*.whl $(ls .device/pyspy/*.whl 2>/dev/null) 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
[ -x /tmp/minio ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.device/minio.xz'), open('/tmp/minio','wb'))"; chmod +x /tmp/minio; }
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
exec python3 bench/gpu_service.py --minio-binary /tmp/minio "$@"
