"""Where the checkout's files are: the one place that knows the repository's layout from this package's location.

The tooling runs from a checkout (the CLI, the local stack, the tests and the benches all read files beside it:
the compose template, the alert rules, the example weights), never from an installed wheel alone.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = REPO_ROOT / "deploy"
ADAPTERS_DIR = REPO_ROOT / "adapters"
ALERT_RULES = REPO_ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "ops" / "grafana" / "imagery-pipeline.json"
WEIGHTS_DIR = REPO_ROOT / "weights"
