"""Offline checks of rendered Kubernetes objects: no cluster needed, so `make test` runs them on every change.

Three layers, each a list of `Problem`s (empty: the objects pass):
- `schema_problems`: every built-in object against the Kubernetes OpenAPI schemas of the pinned version
  (kubernetes-validate, strict: an unknown field is an error, as `kubectl apply`'s server-side field validation
  makes it), and every custom resource against its CRD's openAPIV3Schema (imagery/k8s/crds.py), made strict the
  same way;
- `policy_problems`: what the schemas allow and this project does not, because it would lose or double messages or
  starve the GPU: a GPU in requests only (or requests unequal to limits, which the API server refuses but a schema
  does not), an inference container without a readiness, liveness or startup probe or without resource limits, a
  Deployment without a PodDisruptionBudget, a FlinkDeployment whose upgrade mode restores no state, or without the
  exactly-once flags and savepoint folder of docs/operating.md, "Restarts, crashes and savepoints";
- `coverage_problems`: a team of deploy/teams.yaml missing from the render.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate

from imagery.k8s import crds
from imagery.local.versions import KUBERNETES_VERSION
from imagery.teams import Team
from schemas import limits

GPU = "nvidia.com/gpu"
# upgrade modes that restore the job's state (a savepoint, or the newest checkpoint); `stateless` starts empty
STATEFUL_UPGRADE_MODES = ("savepoint", "last-state")
INFERENCE_CONTAINER = "inference"
REQUIRED_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


@dataclass(frozen=True)
class Problem:
    subject: str  # kind/name
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def subject(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


# ---- schemas -------------------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as a JSON schema that refuses unknown fields (the API server's strict field
    validation), with its Kubernetes extensions spelled in JSON schema."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def _custom_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for key, kind in crds.custom_kinds().items():
        schema = _strict(copy.deepcopy(kind.schema))
        # apiVersion, kind and metadata (ObjectMeta) are the API server's to check, not the CRD's
        schema.setdefault("properties", {}).update(
            apiVersion={"const": kind.api_version}, kind={"const": kind.kind}, metadata={"type": "object"}
        )
        validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def schema_problems(objects: Iterable[dict[str, Any]]) -> list[Problem]:
    problems = []
    custom = _custom_validators()
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in custom:
            for error in sorted(custom[key].iter_errors(obj), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in error.path) or "(top)"
                problems.append(Problem(subject(obj), f"{where}: {error.message}"))
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top)"
            problems.append(Problem(subject(obj), f"{where}: {exc.message}"))
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                Problem(
                    subject(obj),
                    f"no schema for {key[0]} {key[1]} in Kubernetes "
                    f"{KUBERNETES_VERSION} or the CRDs of deploy/k8s/crds",
                )
            )
    return problems


# ---- policy --------------------------------------------------------------------------------------------------------


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or [])


def _gpu_problems(container: dict[str, Any]) -> list[str]:
    resources = container.get("resources") or {}
    requests, limits_ = resources.get("requests") or {}, resources.get("limits") or {}
    found = []
    if GPU in requests and GPU not in limits_:
        found.append(
            f"container {container['name']} asks for {GPU} in requests only: an extended resource is "
            "set in limits (requests default to them)"
        )
    elif GPU in requests and str(requests[GPU]) != str(limits_[GPU]):
        found.append(
            f"container {container['name']}: {GPU} requests ({requests[GPU]}) differ from limits "
            f"({limits_[GPU]}); the API server refuses that"
        )
    if container["name"] == INFERENCE_CONTAINER and GPU not in limits_:
        found.append(f"container {container['name']} has no {GPU} in limits: the model would run on the CPU")
    return found


def _deployment_problems(obj: dict[str, Any]) -> list[str]:
    found = []
    for container in _containers(obj):
        found += _gpu_problems(container)
        if container["name"] != INFERENCE_CONTAINER:
            continue
        found += [
            f"container {container['name']} has no {probe}" for probe in REQUIRED_PROBES if probe not in container
        ]
        resources = container.get("resources") or {}
        found += [
            f"container {container['name']} has no resource {part}"
            for part in ("requests", "limits")
            if not resources.get(part)
        ]
    return found


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _args(obj: dict[str, Any]) -> dict[str, str]:
    """The dispatcher's --flag=value arguments of a FlinkDeployment."""
    args = ((obj.get("spec") or {}).get("job") or {}).get("args") or []
    return dict(arg[2:].split("=", 1) for arg in args if isinstance(arg, str) and arg.startswith("--") and "=" in arg)


def _flink_problems(obj: dict[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    job, conf = spec.get("job") or {}, spec.get("flinkConfiguration") or {}
    args = _args(obj)
    found = []
    mode = job.get("upgradeMode", "stateless")  # the operator's default
    if mode not in STATEFUL_UPGRADE_MODES:
        found.append(
            f"upgradeMode {mode!r} starts the upgraded job without its state: results since the last "
            f"checkpoint are written again and its open transactions lost (use one of "
            f"{', '.join(STATEFUL_UPGRADE_MODES)})"
        )
    if mode == "last-state" and not conf.get("high-availability.type"):
        found.append("upgradeMode 'last-state' needs high-availability.type (the newest checkpoint is found there)")
    if not conf.get("execution.checkpointing.savepoint-dir"):
        found.append("no execution.checkpointing.savepoint-dir: the operator cannot take the upgrade's savepoint")
    if args.get("delivery-guarantee") != "exactly-once":
        found.append("the dispatcher runs without --delivery-guarantee=exactly-once")
    interval = int(args.get("checkpoint-interval-ms", "0") or 0)
    if interval > limits.KAFKA_MAX_TRANSACTION_MS // 2:
        found.append(f"--checkpoint-interval-ms {interval} exceeds half the broker's transaction limit")
    if args.get("resume") != "none":
        found.append(
            "the dispatcher picks its own checkpoint (--resume is not none): the operator's restore path "
            "would be overridden"
        )
    checkpoint_dir, group = args.get("checkpoint-dir", ""), args.get("group-id", "")
    if conf.get("execution.checkpointing.dir") != f"{checkpoint_dir.rstrip('/')}/{group}":
        found.append("execution.checkpointing.dir is not where the job writes (--checkpoint-dir/--group-id)")
    return found


def policy_problems(objects: Iterable[dict[str, Any]]) -> list[Problem]:
    objects = list(objects)
    problems = []
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Deployment":
            problems += [Problem(subject(obj), m) for m in _deployment_problems(obj)]
            labels = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not any(_selects(b["spec"].get("selector") or {}, labels) for b in budgets):
                problems.append(Problem(subject(obj), "no PodDisruptionBudget selects its pods"))
        elif kind == "FlinkDeployment":
            problems += [Problem(subject(obj), m) for m in _flink_problems(obj)]
    return problems


def coverage_problems(objects: Iterable[dict[str, Any]], teams: Iterable[Team]) -> list[Problem]:
    """Each team has its dispatcher (a FlinkDeployment running its --team) and its inference Deployment."""
    objects = list(objects)
    dispatched = {_args(o).get("team") for o in objects if o.get("kind") == "FlinkDeployment"}
    served = {
        env.get("value")
        for o in objects
        if o.get("kind") == "Deployment"
        for c in _containers(o)
        for env in c.get("env") or []
        if env.get("name") == "TEAM"
    }
    problems = []
    for team in teams:
        if team.team not in dispatched:
            problems.append(Problem(f"team/{team.team}", "no FlinkDeployment runs its dispatcher"))
        if team.team not in served:
            problems.append(Problem(f"team/{team.team}", "no Deployment runs its inference service"))
    return problems


def problems(objects: Iterable[dict[str, Any]], teams: Iterable[Team] = ()) -> list[Problem]:
    objects = list(objects)
    return [*schema_problems(objects), *policy_problems(objects), *coverage_problems(objects, teams)]
