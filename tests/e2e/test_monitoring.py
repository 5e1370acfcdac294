"""Monitoring on real parts: a dispatcher job on the standalone Flink cluster (with Flink's Prometheus reporter),
a fruit service, and Debian's Prometheus scraping both with ops/prometheus/alerts.yml.

One pipeline run (module fixture) serves every test: the dispatcher's metrics match what landed in Kafka, every
dashboard query and every metric an alert reads returns series, `imagery health` reports every part, and stopping
the service fires ImageryServiceDown and makes `imagery health` exit 1 (the last test: it stops the service).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml

from imagery import kafka_io
from imagery.local import stack
from imagery.local.inference_service import InferenceService
from imagery.local.prometheus import PrometheusServer
from imagery.local.settings import StackSettings
from imagery.pipeline_run import Collected, DispatcherProcess, collect, produce_messages
from imagery.process import free_port
from imagery.repo import ALERT_RULES, DASHBOARD, REPO_ROOT
from schemas import INFER_JSON_ROUTE, METRICS_ROUTE
from streaming.dispatch.metrics import PROMETHEUS_PREFIX, PROMETHEUS_STAGE_PREFIX
from tests.conftest import remove_bucket, unique
from tests.helpers import imagery_command, put, wait_for
from tests.service_fixtures import FRUIT_SERVICE_ENV

# Debian's prometheus is a requirement of the suite (.ci/run installs it): without it these tests fail, never skip
pytestmark = pytest.mark.e2e

TIMEOUT_S = 240
SCRAPE_S = 1.0  # Prometheus scrapes this often: a query shows nothing new sooner, so waits on one look once a scrape
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")


@dataclass
class Run:
    settings: StackSettings
    service: InferenceService
    prometheus: PrometheusServer
    job_name: str
    job_label: str  # job_name as Flink's reporter writes it
    job_id: str
    input_topic: str
    group_id: str
    produced: int
    got: Collected


@pytest.fixture(scope="module")
def run(flink_cluster: StackSettings, fruit_weights, fruit_images, tmp_path_factory) -> Iterator[Run]:
    settings = flink_cluster
    tmp = tmp_path_factory.mktemp("monitoring")
    inp, out, dlq = unique("in"), unique("out"), unique("dlq")
    kafka_io.create_topics(settings.bootstrap, [inp, out, dlq])
    minio = stack.minio_client(settings)
    bucket = unique("fruit-mon")
    minio.make_bucket(bucket)
    service = InferenceService(
        settings, "fruit", weights_path=str(fruit_weights), env=FRUIT_SERVICE_ENV, log_path=tmp / "service.log"
    )
    prometheus = PrometheusServer(
        {"fruit": [f"{service.host}:{service.port}"]}, interval_s=SCRAPE_S, storage=tmp / "prometheus"
    )
    job_name, group_id = unique("monitored"), unique("g")
    job_id = None
    try:
        service.start()
        prometheus.start()
        for i in range(6):
            put(minio, bucket, f"img/{i}.jpg", fruit_images.make("defect" if i % 2 else "clean", i))
        good = [{"id": f"ok-{i}", "bucket": bucket, "key": f"img/{i % 6}.jpg"} for i in range(24)]
        bad: list[dict | bytes] = [
            b"not json",
            {"id": "no-bucket", "key": "img/0.jpg"},
            {"id": "missing-1", "bucket": bucket, "key": "nowhere/1.jpg"},
            {"id": "missing-2", "bucket": bucket, "key": "nowhere/2.jpg"},
        ]
        produced = produce_messages(settings.bootstrap, inp, [*good, *bad])
        jars = ",".join(str(p) for p in stack.install.connector_jars(settings))  # this cluster's lib/ lacks them
        submitted = subprocess.run(
            [
                "bash",
                str(stack.flink_home() / "bin" / "flink"),
                "run",
                "--detached",
                "-m",
                f"{settings.host}:{settings.flink_rest_port}",
                "--python",
                "streaming/flink/jobs/http_dispatcher.py",
                "--bootstrap",
                settings.bootstrap,
                "--team",
                "fruit",
                "--http-url",
                f"{service.base_url}{INFER_JSON_ROUTE}",
                "--input-topic",
                inp,
                "--output-topic",
                out,
                "--dlq-topic",
                dlq,
                "--group-id",
                group_id,
                "--job-name",
                job_name,
                "--resume",
                "none",
                "--checkpoint-interval-ms",
                "1000",
                "--delivery-guarantee",
                "exactly-once",  # as production runs it: the sinks' commit metrics exist
                "--backoff-ms",
                "50",
                "--connector-jars",
                jars,
                "--checkpoint-dir",
                str(settings.checkpoints_dir),
            ],
            env={**os.environ, **stack.flink_env(settings), "IMAGERY_DETACHED": "1"},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        submitted_id = re.search(r"JobID ([0-9a-f]{32})", submitted.stdout)
        assert submitted_id, submitted.stdout[-3000:]
        job_id = submitted_id.group(1)
        got = collect(settings.bootstrap, out, dlq, lambda c: len(c.results) + len(c.dead) >= produced, TIMEOUT_S)
        assert len(got.results) == len(good) and len(got.dead) == len(bad), (len(got.results), len(got.dead))
        yield Run(
            settings,
            service,
            prometheus,
            job_name,
            re.sub(r"[^A-Za-z0-9_]", "_", job_name),
            job_id,
            inp,
            group_id,
            produced,
            got,
        )
    finally:
        if job_id:
            httpx.patch(f"{settings.flink_rest_url}/jobs/{job_id}?mode=cancel", timeout=10)
        prometheus.cleanup()
        service.stop()
        remove_bucket(minio, bucket)
        kafka_io.delete_topics(settings.bootstrap, [inp, out, dlq])


def value(run: Run, expr: str) -> float | None:
    series = run.prometheus.query(expr)
    return float(series[0]["value"][1]) if series else None


def number(run: Run, expr: str) -> float:
    """The value of `expr`, which has a series."""
    found = value(run, expr)
    assert found is not None, f"no series for {expr}"
    return found


def test_dispatcher_metrics_count_what_landed_in_kafka(run: Run):
    """The job's own numbers, through Flink's reporter and Prometheus, equal what the topics hold."""
    sel = f'{{job_name="{run.job_label}"}}'
    stages = Counter(d.error.stage for d in run.got.dead)
    expected = {
        f"sum({PROMETHEUS_PREFIX}records{sel})": run.produced,
        f"sum({PROMETHEUS_PREFIX}results{sel})": len(run.got.results),
        f"sum({PROMETHEUS_PREFIX}dead_letters_total{sel})": len(run.got.dead),
        **{
            f'sum({PROMETHEUS_STAGE_PREFIX}dead_letters{{job_name="{run.job_label}", stage="{s}"}})': n
            for s, n in stages.items()
        },
    }
    assert set(stages) == {"parse", "validate", "fetch"}, stages

    def seen():
        now = {expr: value(run, expr) for expr in expected}
        return now == expected, now

    wait_for(seen, "the dispatcher's counts in Prometheus", timeout_s=90, every_s=SCRAPE_S)
    # the HTTP latency of the calls, from the dispatcher's side, and how many were in flight at once
    assert number(run, f"max({PROMETHEUS_PREFIX}http_latency_p95_ms{sel})") > 0
    assert number(run, f"max({PROMETHEUS_PREFIX}http_latency_p50_ms{sel})") <= number(
        run, f"max({PROMETHEUS_PREFIX}http_latency_p99_ms{sel})"
    )
    assert value(run, f"sum({PROMETHEUS_PREFIX}http_calls{sel})") == len(run.got.results) + stages["fetch"]
    # Flink's own metrics beside them: the job is up, its source's lag is 0 once everything was read
    assert number(run, f"max(flink_jobmanager_job_uptime{sel})") > 0
    wait_for(
        lambda: value(run, f"sum(flink_taskmanager_job_task_operator_pendingRecords{sel})") == 0,
        "the source's pendingRecords at 0",
        timeout_s=90,
        every_s=SCRAPE_S,
    )


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_returns_series(run: Run):
    queries = dashboard_queries()
    assert len(queries) >= 20

    def empty():
        missing = [(title, expr) for title, expr in queries if not run.prometheus.query(expr)]
        return not missing, missing

    wait_for(empty, "every dashboard query returns series", timeout_s=90, every_s=SCRAPE_S)
    for title in ("Dead letters by stage", "Service latency p50 / p95 / p99"):  # two, as the dashboard shows them
        for expr in [expr for t, expr in queries if t == title]:
            print(
                f"\n{title}: {expr}\n"
                + "\n".join(f"  {s['metric']} {s['value'][1]}" for s in run.prometheus.query(expr))
            )


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


def test_alert_rules_check_and_read_live_series(run: Run):
    """promtool accepts the rules, Prometheus loaded every one, each evaluates, and reads metrics that exist."""
    checked = subprocess.run(["promtool", "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = {r["name"]: r for r in run.prometheus.rules() if r["type"] == "alerting"}
    rules = alert_rules()
    assert set(loaded) == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for r in loaded.values()), [(n, r.get("lastError")) for n, r in loaded.items()]
    for rule in rules:
        run.prometheus.query(rule["expr"])  # evaluates (raises on an error)
        # every metric it reads has series, with every label it matches on (a value may match nothing while all
        # is well: no 5xx, no 429)
        selectors = [
            (name, re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", labels))
            for name, labels in SELECTOR.findall(rule["expr"])
        ]
        assert selectors, rule["alert"]

        def live(selectors=selectors):
            missing = []
            for name, label_names in selectors:
                series = run.prometheus.query(name)
                if not any(set(label_names) <= set(s["metric"]) for s in series):
                    missing.append((name, label_names))
            return not missing, missing

        wait_for(live, f"{rule['alert']} reads live series", timeout_s=30, every_s=SCRAPE_S)
    firing = [a for a in run.prometheus.alerts() if a["state"] == "firing"]
    assert not firing, firing  # a healthy run fires nothing


def health(run: Run, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "imagery.cli",
            "health",
            "--service",
            f"fruit={run.service.base_url}",
            "--topic",
            f"fruit={run.input_topic}",
            "--group",
            f"fruit={run.group_id}",
            "--job",
            f"fruit={run.job_name}",
            "--bootstrap",
            run.settings.bootstrap,
            "--flink-url",
            run.settings.flink_rest_url,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_health_reports_every_part_up(run: Run):
    def all_ok():  # the lag is 0 once the job committed its offsets at a checkpoint
        done = health(run, "--json")
        report = json.loads(done.stdout)
        return done.returncode == 0 and all(c["status"] == "ok" for c in report["checks"]), report

    _, report = wait_for(all_ok, "imagery health --json all ok", timeout_s=60)
    by_part = {c["part"]: c for c in report["checks"]}
    assert set(by_part) == {"kafka", "minio", "flink", "job", "healthz", "readyz", "lag"}
    assert by_part["lag"]["data"]["lag"] == 0 and by_part["job"]["data"]["jobs"][0]["id"] == run.job_id
    table = health(run)
    assert table.returncode == 0 and "all up" in table.stdout, table.stdout
    print(table.stdout)


def test_stopped_service_fires_an_alert_and_fails_health(run: Run):
    instance = f"{run.service.host}:{run.service.port}"
    run.service.stop()

    def firing():
        alerts = [
            a
            for a in run.prometheus.alerts()
            if a["labels"]["alertname"] == "ImageryServiceDown" and a["labels"].get("instance") == instance
        ]
        return bool(alerts) and alerts[0]["state"] == "firing", alerts

    _, alerts = wait_for(firing, "ImageryServiceDown firing", timeout_s=120, every_s=SCRAPE_S)
    assert alerts[0]["labels"]["team"] == "fruit" and alerts[0]["labels"]["severity"] == "page"
    print(json.dumps(alerts, indent=2))
    done = health(run, "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    status = {c["part"]: c["status"] for c in report["checks"]}
    assert status["healthz"] == status["readyz"] == "down"
    assert status["kafka"] == status["minio"] == status["flink"] == status["job"] == "ok"


def test_a_local_minicluster_job_reports_to_prometheus_too(
    bootstrap, new_topic, minio, bucket, fruit_service, fruit_images, tmp_path
):
    """`imagery dispatch` (a MiniCluster) serves the same metrics on its reporter port (--prometheus-port)."""
    inp, out, dlq = new_topic("in"), new_topic("out"), new_topic("dlq")
    put(minio, bucket, "a.jpg", fruit_images.clean)
    produced = produce_messages(bootstrap, inp, [{"bucket": bucket, "key": "a.jpg"}] * 2 + [b"not json"])
    port = free_port()
    args = [
        "--bootstrap",
        bootstrap,
        "--team",
        "fruit",
        "--http-url",
        f"{fruit_service.base_url}{INFER_JSON_ROUTE}",
        "--input-topic",
        inp,
        "--output-topic",
        out,
        "--dlq-topic",
        dlq,
        "--group-id",
        unique("g"),
        "--resume",
        "none",
        "--job-name",
        (name := unique("local")),
        "--prometheus-port",
        str(port),
    ]

    def health() -> dict[str, dict]:
        """`imagery health` of this job, asking a Flink REST port where no cluster answers: it finds the job itself."""
        flink_url = f"http://127.0.0.1:{free_port()}"
        done = imagery_command(
            "health",
            "--json",
            "--team",
            "fruit",
            "--job",
            f"fruit={name}",
            "--bootstrap",
            bootstrap,
            "--flink-url",
            flink_url,
        )
        return {c["part"]: c for c in json.loads(done.stdout)["checks"] if c["part"] in ("flink", "job")}

    with DispatcherProcess(args, tmp_path / "dispatcher.log") as job:
        seen = health()
        assert (seen["flink"]["status"], seen["job"]["status"]) == ("ok", "ok"), seen
        assert job.proc is not None and seen["job"]["data"]["local"][0]["pid"] == job.proc.pid, seen

        def scraped():
            job.check_alive()
            try:
                text = httpx.get(f"http://127.0.0.1:{port}{METRICS_ROUTE}", timeout=2).text
            except httpx.HTTPError:
                return False, "no answer"
            found = {
                m.group(1): float(m.group(2))
                for m in re.finditer(
                    rf"^{PROMETHEUS_PREFIX}(records|results|dead_letters_total)\{{[^}}]*\}} (\S+)$", text, re.M
                )
            }
            return found == {"records": produced, "results": 2, "dead_letters_total": 1}, found

        wait_for(scraped, "the local job's reporter serves its counts", timeout_s=TIMEOUT_S)
    assert health()["job"]["status"] != "ok", "the stopped job is no longer reported running"
