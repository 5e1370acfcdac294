#!/bin/sh
# Only `mc ready local`: exit 0 once the local server is ready (the official image's real mc does more). As mc does,
# it asks the address of MC_HOST_local if set (https://localhost:9000 on the secured variant; its credentials, if any,
# are not needed), trusting the CA in $MC_CONFIG_DIR/certs/CAs (default ~/.mc).
[ "$1 $2" = "ready local" ] || { echo "this image's mc answers only 'mc ready local'" >&2; exit 2; }
url=$(printf '%s' "${MC_HOST_local:-http://127.0.0.1:9000}" | sed -E 's#^(https?://)[^@/]*@#\1#; s#/+$##')
ca=$(ls "${MC_CONFIG_DIR:-$HOME/.mc}"/certs/CAs/* 2>/dev/null | head -n 1)
exec curl -fsS -o /dev/null ${ca:+--cacert "$ca"} "$url/minio/health/ready"
