"""Keeps one team's dispatcher job running on a Flink cluster: the compose stack's `flink-dispatcher-<team>`.

A job submitted once is lost when a JobManager without HA restarts, and a second submission beside a running job
would read every partition again (every result twice). So this process watches the cluster's jobs by name:
- none of the team's job is alive (first start, or the JobManager lost it): submit it with `flink run`; the job
  resumes from its newest retained checkpoint (streaming/dispatch/checkpoints.py), so nothing is lost or redone;
- one is alive: leave it;
- more than one is alive (submitted by hand, say): cancel all but the oldest.
The job's options come from the same environment the job reads (DispatcherConfig).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import httpx

from streaming.dispatch.config import parse_args
from streaming.flink.jobs import JOB_FILE

# a job in any of these states holds (or will hold) the team's partitions; others are gone for good
ALIVE = {"INITIALIZING", "CREATED", "RUNNING", "FAILING", "CANCELLING", "RESTARTING", "RECONCILING", "SUSPENDED"}


def jobs_named(rest: httpx.Client, name: str) -> list[dict]:
    """The cluster's live jobs of this name, oldest first."""
    jobs = rest.get("/jobs/overview").raise_for_status().json()["jobs"]
    return sorted((j for j in jobs if j["name"] == name and j["state"] in ALIVE), key=lambda j: j["start-time"])


def submit(jobmanager: str, env: dict[str, str]) -> None:
    command = ["flink", "run", "-m", jobmanager, "--detached", "--python", str(JOB_FILE)]
    print("submitting:", " ".join(command), flush=True)
    subprocess.run(command, env={**env, "IMAGERY_DETACHED": "1"}, check=True)


def keep(jobmanager: str, interval_s: float) -> None:
    name = parse_args([], env=dict(os.environ)).name
    with httpx.Client(base_url=f"http://{jobmanager}", timeout=10) as rest:
        while True:
            try:
                alive = jobs_named(rest, name)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                print(f"waiting for the JobManager at {jobmanager}: {exc}", flush=True)
            else:
                if not alive:
                    print(f"no live job named {name}: submitting it", flush=True)
                    try:
                        submit(jobmanager, dict(os.environ))
                    except subprocess.CalledProcessError as exc:
                        print(f"submission failed ({exc}); trying again", flush=True)
                for extra in alive[1:]:
                    print(f"cancelling {extra['jid']}: a second job named {name} beside {alive[0]['jid']}", flush=True)
                    rest.patch(f"/jobs/{extra['jid']}", params={"mode": "cancel"})
            time.sleep(interval_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The job's settings come from this process's environment: the "
        "variables `python streaming/flink/jobs/http_dispatcher.py --help` lists.",
    )
    parser.add_argument("--jobmanager", default=os.environ.get("FLINK_JOBMANAGER", "flink-jobmanager:8081"))
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between looks at the cluster")
    args = parser.parse_args(argv)
    keep(args.jobmanager, args.interval)


if __name__ == "__main__":
    main()
