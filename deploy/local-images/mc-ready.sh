#!/bin/sh
# Only `mc ready local`: exit 0 once the local server is ready (the official image's real mc does more).
[ "$1 $2" = "ready local" ] || { echo "this image's mc answers only 'mc ready local'" >&2; exit 2; }
exec curl -fsS -o /dev/null "http://127.0.0.1:9000/minio/health/ready"
