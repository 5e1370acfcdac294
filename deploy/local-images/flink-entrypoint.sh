#!/bin/bash
# The official flink image's entrypoint contract: `jobmanager`, `taskmanager`, FLINK_PROPERTIES added to the
# configuration, anything else run as given; as the `flink` user. The configuration starts from the wheel's own
# (it carries the --add-opens flags Java 17 needs), with the container defaults of the official image on top.
set -e
CONF_FILE="$FLINK_HOME/conf/config.yaml"

write_conf() {
  JOB_MANAGER_RPC_ADDRESS=${JOB_MANAGER_RPC_ADDRESS:-$(hostname -f)} /opt/venv/bin/python - "$CONF_FILE" <<'PY'
import os, sys, yaml

def flatten(tree, prefix=""):
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out

path = sys.argv[1]
conf = flatten(yaml.safe_load(open(path + ".wheel")))
conf.update({
    "jobmanager.rpc.address": os.environ["JOB_MANAGER_RPC_ADDRESS"],
    "jobmanager.bind-host": "0.0.0.0", "taskmanager.bind-host": "0.0.0.0",
    "rest.address": "0.0.0.0", "rest.bind-address": "0.0.0.0",
    "blob.server.port": 6124, "query.server.port": 6125,
})
conf.pop("taskmanager.host", None)
conf.update(flatten(yaml.safe_load(os.environ.get("FLINK_PROPERTIES") or "") or {}))
with open(path, "w") as f:
    yaml.safe_dump(conf, f, default_flow_style=False, width=10_000)
PY
  chown flink:flink "$CONF_FILE"
}

drop_privs() { if [ "$(id -u)" = 0 ]; then echo setpriv --reuid=flink --regid=flink --init-groups; fi; }

case "$1" in
  help) echo "Usage: $(basename "$0") (jobmanager|taskmanager|help)"; exit 0 ;;
  jobmanager) shift; write_conf; exec $(drop_privs) "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@" ;;
  taskmanager) shift; write_conf; exec $(drop_privs) "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@" ;;
esac
if [ "$(id -u)" = 0 ]; then write_conf; fi
exec $(drop_privs) "$@"
