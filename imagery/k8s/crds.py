"""The CustomResourceDefinitions of the operators a team's objects need, as deploy/k8s/crds/ keeps them.

deploy/k8s/crds/sources.yaml names each file's source, version and sha256. The one change made on loading:
the Flink Kubernetes Operator's CRD (1.10.0, the newest Maven Central serves here) lists Flink versions up to v1_20,
and the project runs Flink 2.2; releases after 1.10 add v2_0, v2_1, v2_2 to that same enum, so those are added
there, and nowhere else. What is validated against them: imagery/k8s/validate.py; what applies them to a real API
server: `make test-k8s` (imagery/k8s/control_plane.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from imagery.errors import ToolError
from imagery.repo import DEPLOY_DIR

CRD_DIR = DEPLOY_DIR / "k8s" / "crds"
SOURCES_FILE = CRD_DIR / "sources.yaml"
FLINK_DEPLOYMENT_CRD = "flinkdeployments.flink.apache.org"
# the operator's spelling of the Flink versions released after the pinned CRD's newest (v1_20)
FLINK_VERSIONS_AFTER_PINNED = ("v2_0", "v2_1", "v2_2")


class CrdError(ToolError):
    """A CRD file is missing, altered, or lacks what this module patches."""


@dataclass(frozen=True)
class CrdSource:
    file: Path
    version: str
    source: str
    sha256: str


def sources() -> list[CrdSource]:
    entries = yaml.safe_load(SOURCES_FILE.read_text())["crds"]
    return [CrdSource(CRD_DIR / e["file"], str(e["version"]), e["source"], e["sha256"]) for e in entries]


def check_sources() -> None:
    """Every file is the published one (its sha256 as sources.yaml records it)."""
    for entry in sources():
        if not entry.file.is_file():
            raise CrdError(f"{entry.file} is missing (see {SOURCES_FILE})")
        digest = hashlib.sha256(entry.file.read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise CrdError(f"{entry.file.name} is not the file {entry.source} published (sha256 {digest})")


@cache
def definitions() -> tuple[dict[str, Any], ...]:
    """Every CRD, parsed, with the Flink versions after the pinned operator's added to the FlinkDeployment's enum."""
    crds = []
    for entry in sources():
        crd = yaml.safe_load(entry.file.read_text())
        if crd["metadata"]["name"] == FLINK_DEPLOYMENT_CRD:
            for version in crd["spec"]["versions"]:
                enum = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
                enum.extend(v for v in FLINK_VERSIONS_AFTER_PINNED if v not in enum)
        crds.append(crd)
    return tuple(crds)


def write_definitions(folder: Path) -> list[Path]:
    """The CRDs as definitions() has them, one file each, for `kubectl apply`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for crd in definitions():
        path = folder / f"{crd['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(crd, sort_keys=False))
        paths.append(path)
    return paths


@dataclass(frozen=True)
class CustomKind:
    """One served version of a CRD: what an object's apiVersion and kind select."""

    api_version: str
    kind: str
    schema: dict[str, Any]


def custom_kinds() -> dict[tuple[str, str], CustomKind]:
    """(apiVersion, kind) -> its openAPIV3Schema, for every served version of every CRD."""
    kinds = {}
    for crd in definitions():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                api_version = f"{group}/{version['name']}"
                kinds[(api_version, kind)] = CustomKind(api_version, kind, version["schema"]["openAPIV3Schema"])
    return kinds
