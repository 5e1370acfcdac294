"""imagery.process on real processes: small `python -c` programs that answer, exit early, ignore SIGTERM or fork."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from imagery.process import (
    NoAnswerYet,
    ProcessError,
    free_port,
    group_members,
    http_200,
    listening,
    port_open,
    process_tree_cpu,
    read_pid_file,
    remove_pid_file,
    spawn,
    stop_group,
    write_pid_file,
)

IGNORE_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
# a child that starts a grandchild (which writes its pid to a file, says so and sleeps), then sleeps itself
FORKS = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep({parent_s})"
GRANDCHILD = (
    "{prefix}import os, time; open({pid_path!r}, 'w').write(str(os.getpid())); "
    "print('grandchild up', flush=True); time.sleep(60)"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def log_says(path: Path, line: str):
    """A probe: LINE is a line of the log (a whole line: the header line quotes the program's code)."""

    def probe() -> None:
        if line not in path.read_text().splitlines():
            raise NoAnswerYet(f"no line {line!r} in the log yet")

    return probe


def forking(tmp_path: Path, parent_s: float, ignore_term: bool = False) -> tuple[list[str], Path]:
    pid_path = tmp_path / "grandchild.pid"
    grandchild = GRANDCHILD.format(prefix=IGNORE_TERM if ignore_term else "", pid_path=str(pid_path))
    return python(FORKS.format(grandchild=grandchild, parent_s=parent_s)), pid_path


def test_a_server_is_waited_for_and_stopped_whole(tmp_path):
    port = free_port()
    assert not port_open("127.0.0.1", port)
    server = spawn(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        tmp_path / "http.log",
        name="a file server",
        cwd=tmp_path,
    )
    server.wait_ready(listening("127.0.0.1", port), timeout_s=30)
    server.wait_ready(http_200(f"http://127.0.0.1:{port}/"), timeout_s=30)
    assert port_open("127.0.0.1", port) and server.running
    assert group_members(server.pid) == [server.pid]  # its own group, which it leads
    stopped = server.stop()
    assert stopped.clean and str(stopped) == f"process group {server.pid} stopped on SIGTERM"
    assert server.returncode is not None and not port_open("127.0.0.1", port)
    assert "starting a file server:" in (tmp_path / "http.log").read_text()  # the header line


def test_a_probe_that_is_not_200_says_what_it_got(tmp_path):
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / "http.log", cwd=tmp_path
    )
    try:
        server.wait_ready(listening("127.0.0.1", port), timeout_s=30)
        with pytest.raises(NoAnswerYet, match="404"):
            http_200(f"http://127.0.0.1:{port}/nowhere")()
        with pytest.raises(NoAnswerYet, match="refused"):
            http_200(f"http://127.0.0.1:{free_port()}/")()
    finally:
        server.stop()


def test_exiting_while_starting_fails_at_once_with_the_log_tail(tmp_path):
    process = spawn(
        python("import sys; print('no model for team x', flush=True); sys.exit(3)"),
        tmp_path / "dies.log",
        name="the x service",
    )
    started = time.monotonic()
    with pytest.raises(ProcessError) as err:
        process.wait_ready(listening("127.0.0.1", free_port()), timeout_s=60)
    assert time.monotonic() - started < 30  # not the deadline
    message = str(err.value)
    assert message.startswith("the x service exited with code 3 while starting")
    assert "no model for team x" in message and str(tmp_path / "dies.log") in message
    with pytest.raises(ProcessError, match="exited with code 3"):
        process.check_alive()


def test_not_ready_by_the_deadline_names_the_last_answer_and_leaves_it_running(tmp_path):
    process = spawn(python("import time; time.sleep(60)"), tmp_path / "slow.log", name="slow")
    port = free_port()
    try:
        with pytest.raises(ProcessError, match=rf"slow was not ready within 1s \(nothing listens on .*:{port}\)"):
            process.wait_ready(listening("127.0.0.1", port), timeout_s=1.0, poll_s=0.1)
        assert process.running
        process.check_alive()
    finally:
        process.stop()


def test_sigterm_ignored_means_sigkill_and_the_report_names_the_pid(tmp_path):
    log = tmp_path / "stubborn.log"
    process = spawn(python(IGNORE_TERM + "import time; print('up', flush=True); time.sleep(60)"), log)
    process.wait_ready(log_says(log, "up"), timeout_s=30, poll_s=0.05)
    started = time.monotonic()
    stopped = process.stop(timeout_s=0.5)
    assert stopped.killed == (process.pid,) and stopped.survivors == ()
    assert not stopped.clean and "killed after SIGTERM's grace" in str(stopped)
    assert process.returncode == -9 and time.monotonic() - started < 10


@pytest.mark.parametrize("orphaned", [False, True], ids=["with its parent", "after its parent exited"])
def test_the_group_stop_reaches_a_grandchild(tmp_path, orphaned):
    argv, pid_path = forking(tmp_path, parent_s=0.5 if orphaned else 60)
    log = tmp_path / "forks.log"
    process = spawn(argv, log)
    process.wait_ready(log_says(log, "grandchild up"), timeout_s=30, poll_s=0.05)
    grandchild = int(pid_path.read_text())
    if orphaned:
        process.wait(30)  # the leader is gone; its group lives on in the grandchild
    assert set(group_members(process.pid)) == ({grandchild} if orphaned else {process.pid, grandchild})
    assert process.stop().clean
    assert not alive(grandchild) and group_members(process.pid) == []
    with pytest.raises(ProcessLookupError):  # collected by init too: nothing holds the group's id any more
        os.killpg(process.pid, 0)


def test_a_grandchild_that_ignores_sigterm_is_killed_and_reported(tmp_path):
    argv, pid_path = forking(tmp_path, parent_s=60, ignore_term=True)
    log = tmp_path / "stubborn-grandchild.log"
    process = spawn(argv, log)
    process.wait_ready(log_says(log, "grandchild up"), timeout_s=30, poll_s=0.05)
    grandchild = int(pid_path.read_text())
    stopped = process.stop(timeout_s=0.5)
    assert stopped.killed == (grandchild,) and stopped.survivors == ()  # the leader itself ended on SIGTERM
    assert not alive(grandchild)


def test_kill_is_sigkill_at_once(tmp_path):
    log = tmp_path / "killed.log"
    process = spawn(python(IGNORE_TERM + "import time; print('up', flush=True); time.sleep(60)"), log)
    process.wait_ready(log_says(log, "up"), timeout_s=30, poll_s=0.05)
    stopped = process.kill()
    assert stopped.killed == (process.pid,) and process.returncode == -9


def test_stopping_a_group_that_is_gone_reports_nothing(tmp_path):
    process = spawn(python("pass"), tmp_path / "quick.log")
    process.wait(30)
    assert process.stop().clean
    assert stop_group(process.pid).clean


def test_pid_files_name_a_live_group_or_nothing(tmp_path):
    path = tmp_path / "pids" / "part.pid"
    assert read_pid_file(path) is None
    log = tmp_path / "part.log"
    process = spawn(python("import time; print('up', flush=True); time.sleep(60)"), log)
    write_pid_file(path, process.pid)
    written = read_pid_file(path)
    assert written is not None and written == process.pid
    stop_group(written)  # as `imagery down` stops a part another process started
    assert read_pid_file(path) is None and not path.exists()  # a pid file of a group that is gone is removed
    path.write_text("not a pid")
    assert read_pid_file(path) is None and not path.exists()
    write_pid_file(path, 1)
    remove_pid_file(path)
    assert not path.exists()


def test_free_port_is_free_and_port_open_sees_a_listener():
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        assert not port_open("127.0.0.1", port)
        listener.listen()
        assert port_open("127.0.0.1", port)


def test_process_tree_cpu_counts_the_children(tmp_path):
    log = tmp_path / "busy.log"
    busy = "import time\nwhile time.process_time() < 0.3: pass\nprint('spun', flush=True); time.sleep(60)"
    process = spawn(
        python(f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {busy!r}]); time.sleep(60)"), log
    )
    try:
        process.wait_ready(log_says(log, "spun"), timeout_s=30, poll_s=0.05)
        tree = process_tree_cpu(process.pid)
        assert len(tree) == 2 and all(name.startswith("python") for name, _ in tree)
        assert sum(cpu for _, cpu in tree) >= 0.25  # clock ticks round it
    finally:
        process.stop()
