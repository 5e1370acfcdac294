"""Processes of our own (the local stack's parts, the inference service, the dispatcher, Prometheus, the benches'
helpers): start one in its own process group with its output in a log file, wait until it answers, stop the whole
group (SIGTERM, a grace period, then SIGKILL, reporting what had to be killed and what survived), keep a pid file
for one that outlives the process that started it (the local stack's parts), and read CPU time from /proc.

Standard library only (imagery.errors is too): bench/gpu_service.py uses it on a bare GPU machine that has no
tooling installed.

    service = spawn([sys.executable, "-m", "http.server", str(port)], log_path, name="a file server")
    service.wait_ready(http_200(f"http://127.0.0.1:{port}/"), timeout_s=30)
    stopped = service.stop()        # stopped.killed: pids that ignored SIGTERM; stopped.survivors: even SIGKILL
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagery.errors import ToolError

StartupProbe = Callable[[], object]
"""Asks a starting process whether it answers: returns when it does, raises (saying what it saw) until then."""


class ProcessError(ToolError):
    """A process exited while starting, or did not answer in time; the message carries its log's tail."""


class NoAnswerYet(ToolError):
    """A startup probe's answer while the process does not answer yet; the message says what the probe saw."""


# ---------------------------------------------------------------------------- ports and probes


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick); someone else may take it before it is used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """COUNT distinct free ports (two calls of free_port may name the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port(host)) not in ports:
            ports.append(port)
    return ports


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on HOST:PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def listening(host: str, port: int) -> StartupProbe:
    """A probe: something accepts connections on HOST:PORT."""

    def probe() -> None:
        if not port_open(host, port):
            raise NoAnswerYet(f"nothing listens on {host}:{port}")

    return probe


# our own processes on loopback: never through an http_proxy of the environment
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_200(url: str, timeout_s: float = 2.0, context: ssl.SSLContext | None = None) -> StartupProbe:
    """A probe: a GET of URL answers 200 (an https URL verified with CONTEXT, default: the system's roots)."""
    opener = (
        _DIRECT
        if context is None
        else urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    )

    def probe() -> None:
        try:
            with opener.open(url, timeout=timeout_s) as response:
                status, body = response.status, response.read(300)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(300)
        except OSError as exc:  # refused, reset, timed out: not listening yet
            raise NoAnswerYet(f"{url}: {exc}") from None
        if status != 200:
            raise NoAnswerYet(f"{url} {status}: {body.decode(errors='replace')}")

    return probe


# ---------------------------------------------------------------------------- logs


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---------------------------------------------------------------------------- /proc


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/PID/stat, or None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.index("(") + 1 : raw.rindex(")")], raw.rsplit(")", 1)[1].split()


def group_members(pgid: int) -> list[int]:
    """The live processes of process group PGID (zombies, dead already, not counted)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            state, pgrp = stat[1][0], int(stat[1][2])
            if pgrp == pgid and state not in "ZX":
                members.append(int(entry))
    return sorted(members)


def process_tree_cpu(pid: int) -> list[tuple[str, float]]:
    """(command name, user + system CPU seconds) of PID and each of its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        if (stat := _stat(current)) is None:
            continue  # it ended meanwhile
        out.append((stat[0], (int(stat[1][11]) + int(stat[1][12])) / tick))
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of PID and its live descendants (a server's workers, a job's JVM and Python)."""
    return sum(cpu for _, cpu in process_tree_cpu(pid))


def live_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every live process this user may read (zombies, dead already, left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (stat := _stat(int(entry))) is None or stat[1][0] in "ZX":
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
        found.append((int(entry), [arg.decode(errors="replace") for arg in argv[:-1]]))
    return found


def process_environment(pid: int) -> dict[str, str]:
    """PID's environment as it started ({} once it is gone, or when it is not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def process_age_s(pid: int) -> float | None:
    """How long PID has been running, in seconds; None once it is gone."""
    if (stat := _stat(pid)) is None:
        return None
    started_s = int(stat[1][19]) / os.sysconf("SC_CLK_TCK")  # field 22 of /proc/PID/stat: ticks after boot
    return float(Path("/proc/uptime").read_text().split()[0]) - started_s


# ---------------------------------------------------------------------------- stopping a process group


@dataclass(frozen=True)
class Stopped:
    """What stopping process group PGID took: `killed`, the pids still alive after SIGTERM's grace period (they got
    SIGKILL); `survivors`, the pids alive even after SIGKILL (stuck in the kernel: look at them)."""

    pgid: int
    killed: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()

    @property
    def clean(self) -> bool:
        """Every process of the group ended on SIGTERM."""
        return not self.killed and not self.survivors

    def __str__(self) -> str:
        parts = [f"process group {self.pgid}"]
        if self.killed:
            parts.append(f"killed after SIGTERM's grace: {', '.join(map(str, self.killed))}")
        if self.survivors:
            parts.append(f"STILL ALIVE after SIGKILL: {', '.join(map(str, self.survivors))}")
        return "; ".join(parts) if len(parts) > 1 else f"{parts[0]} stopped on SIGTERM"


def _reap_child(pid: int) -> None:
    """Collect PID's exit status if it is our child (else a zombie of ours would count as a running leader)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


ZOMBIE_GRACE_S = 2.0


def _wait_gone(pgid: int, timeout_s: float, reap: Callable[[], object]) -> bool:
    """Wait up to TIMEOUT_S until no process of group PGID lives (False if some still do); then up to ZOMBIE_GRACE_S
    more until their parents (init, for an orphan) have collected the dead ones too: until then the group's id is
    taken and `killpg(pgid, 0)` still succeeds, as if something of it ran."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap()
        if not group_members(pgid):
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    settled = time.monotonic() + ZOMBIE_GRACE_S
    while time.monotonic() < settled:
        reap()
        if not signal_group(pgid, 0):
            break
        time.sleep(0.02)
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send SIG to every process of group PGID; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_group(
    pgid: int, timeout_s: float = 15.0, kill_timeout_s: float = 10.0, reap: Callable[[], object] | None = None
) -> Stopped:
    """SIGTERM to every process of group PGID, up to TIMEOUT_S for all of them to end, then SIGKILL to those left
    and up to KILL_TIMEOUT_S more. REAP collects the leader's exit status while waiting (default: waitpid, for a
    leader that is our child). Reaches what the leader forked, even after the leader itself ended."""
    reap = reap or (lambda: _reap_child(pgid))
    reap()
    if not group_members(pgid) or not signal_group(pgid, signal.SIGTERM):
        return Stopped(pgid)
    if _wait_gone(pgid, timeout_s, reap):
        return Stopped(pgid)
    return _kill(pgid, kill_timeout_s, reap)


def kill_group(pgid: int, timeout_s: float = 10.0, reap: Callable[[], object] | None = None) -> Stopped:
    """SIGKILL to every process of group PGID at once (a crash: nothing flushed), waiting up to TIMEOUT_S."""
    reap = reap or (lambda: _reap_child(pgid))
    reap()
    return _kill(pgid, timeout_s, reap)


def _kill(pgid: int, timeout_s: float, reap: Callable[[], object]) -> Stopped:
    lingering = tuple(group_members(pgid))
    if not lingering or not signal_group(pgid, signal.SIGKILL):
        return Stopped(pgid)
    _wait_gone(pgid, timeout_s, reap)
    return Stopped(pgid, killed=lingering, survivors=tuple(group_members(pgid)))


# ---------------------------------------------------------------------------- one process


class Process:
    """A command started by `spawn`: the leader of its own process group, its output appended to `log_path`."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        self.popen = popen
        self.name = name
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the group's id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The leader's exit code, None while it runs."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the leader to exit (subprocess.TimeoutExpired past TIMEOUT_S); its exit code."""
        return self.popen.wait(timeout_s)

    def send_signal(self, sig: int) -> None:
        """SIG to the leader alone (`stop` and `kill` signal the whole group)."""
        if self.running:
            self.popen.send_signal(sig)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def check_alive(self) -> None:
        """Raise ProcessError, with the log's tail, if the leader has exited."""
        if (code := self.returncode) is not None:
            raise ProcessError(f"{self.name} exited with code {code}; log {self.log_path}:\n{self.log_tail()}")

    def wait_ready(self, probe: StartupProbe, timeout_s: float, poll_s: float = 0.2) -> None:
        """Call PROBE every POLL_S until it returns. Raises ProcessError, with the log's tail, as soon as the process
        exits, or once TIMEOUT_S have passed; the process is left as it is (the caller decides to stop it)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if (code := self.returncode) is not None:
                raise ProcessError(
                    f"{self.name} exited with code {code} while starting; log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} was not ready within {timeout_s:.0f}s ({last}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                probe()
                return
            except Exception as exc:  # noqa: BLE001  (a probe's failures vary with its client library)
                last = str(exc) or repr(exc)
            time.sleep(poll_s)

    def stop(self, timeout_s: float = 15.0) -> Stopped:
        """Stop the whole group (see stop_group) and reap the leader."""
        stopped = stop_group(self.pid, timeout_s, reap=self.popen.poll)
        self.popen.wait()
        return stopped

    def kill(self) -> Stopped:
        """SIGKILL the whole group at once (a crash: nothing flushed) and reap the leader."""
        stopped = kill_group(self.pid, reap=self.popen.poll)
        self.popen.wait()
        return stopped


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Start ARGV in a new session, so in a process group of its own that `stop` reaches whole (whatever it forks
    stays in it), with stdin from /dev/null and stdout and stderr appended to LOG_PATH after a header line. ENV is
    laid over this process's environment. NAME (default: the program's) names it in errors."""
    argv = [str(arg) for arg in argv]
    name = name or Path(argv[0]).name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {shlex.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return Process(popen, name, log_path)


# ---------------------------------------------------------------------------- pid files


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(pid))


def read_pid_file(path: Path) -> int | None:
    """The pid in PATH, a group leader's (spawn's), while any process of its group lives (the leader, or what it
    forked: `stop_group` still reaches those); a file naming a group that is gone (or no pid) is removed."""
    try:
        pid = int(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        path.unlink(missing_ok=True)
        return None
    if group_members(pid):
        return pid
    _reap_child(pid)  # a leader that was our child: collect its exit status
    path.unlink(missing_ok=True)
    return None


def remove_pid_file(path: Path) -> None:
    path.unlink(missing_ok=True)
