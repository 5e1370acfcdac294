"""The runners: one `<team>_runner.py` per team (the protocol is in base.py), and what their weights are made from."""

from pathlib import Path

# Where a runner finds its team's weights when WEIGHTS_PATH names no file: ./weights beside this package (the
# checkout's; /app/weights in the service's image, where compose mounts it).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
