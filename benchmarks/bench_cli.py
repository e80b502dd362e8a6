"""CLI benchmarks: an app served by ``trioworker run`` (or ``faststream run``), measured from
outside its process tree, as a user or a process manager runs it.

Run from the virtualenv that has the command (the driver picks it):
    python benchmarks/bench_cli.py workers-1 QUEUE COUNT   # trioworker run cli_app:app --workers 1
    python benchmarks/bench_cli.py workers-2 QUEUE COUNT   # ... --workers 2 (a supervisor)
    python benchmarks/bench_cli.py startup-trioworker QUEUE 1  # trioworker run startup_app:app
    python benchmarks/bench_cli.py startup-faststream QUEUE 1  # faststream run
                                                               #   startup_faststream_app:app
Prints one JSON line (see ``_common.Result``). Stdlib only: nothing here imports the system
measured, so the harness costs it nothing but a ``select``.

``workers-N`` (the ``cli-workers`` scenario): the queue holds COUNT messages; the command is
launched, each bulk its workers handle is reported on a FIFO (``_handled.py``), and once
COUNT were handled the harness sends SIGTERM to the command (the supervisor with N > 1) and
waits for it to exit (status 0 required). ``seconds``: from the launch to the exit — process
start, imports, connect, the work, the graceful stop.

CPU: ``cpu_seconds`` is the whole tree, the supervisor and every worker
(``getrusage(RUSAGE_CHILDREN)`` once the command was reaped: a process's waited-for
children are added to its own). It is split, from each process's ``/proc/PID/stat`` (clock
ticks, 10 ms), into three phases: ``start_cpu_ms`` (what each process had spent when it
handled its first bulk — the supervisor: when the first worker did; a worker that never
handled a bulk counts as start whole), the flow (from there to the moment the last message
was handled: ``flow_cpu_us_per_msg`` per message handled in it, and
``consume_msg_per_s``), and ``stop_cpu_ms`` (the rest: the graceful stops and interpreter
exits). ``supervisor_cpu_ms`` is the supervisor's own (read from the exited, not yet
reaped process), with ``supervisor_flow_cpu_ms`` — what supervising costs while the work
flows — and ``supervisor_stop_cpu_ms``.

``startup-*`` (the ``startup`` scenario): the queue holds one message. ``seconds`` (and
``startup_ms``): from the launch of the command to the handler's line on the FIFO. Then the
app idles for ``--idle`` seconds (2) and ``idle_rss_mib`` is the VmRSS of the process whose
handler ran (one worker process), ``startup_cpu_ms`` its CPU so far; then SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import Result, now, parse_args
from _handled import ENV as HANDLED_ENV
from _handled import HandledReader

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's bin/ (sys.executable is not resolved)
TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 60.0  # graceful stop: grace period of in-flight handlers (none here) + margin


class BenchError(RuntimeError):
    pass


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of ``pid``, from ``/proc/PID/stat``.

    Readable while the process runs and after it exited until it is reaped (a zombie keeps
    its accounting); clock-tick resolution (10 ms).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # After the ")" closing the command name: field 3 (state) is index 0.
        fields = f.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (a scan of ``/proc``: no ``/proc/PID/task/*/children``
    on every kernel)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if ppid == pid:
                found.append(int(entry))
    return found


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for pid {pid}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Served:
    """One launch of a CLI command; its output goes to a log file kept for error reports.

    The command's exit is watched through a pidfd: ``select`` on it wakes up when the
    process exits, without reaping it, so its ``/proc`` entry (its CPU) stays readable.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.started = now()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pid = self.proc.pid
        self.pidfd = os.pidfd_open(self.pid)
        self.exited_at: float | None = None

    def exited(self, timeout: float = 0.0) -> bool:
        if self.exited_at is None:
            ready, _, _ = select.select([self.pidfd], [], [], timeout)
            if ready:
                self.exited_at = now()
        return self.exited_at is not None

    def stop(self) -> tuple[int, float, float]:
        """SIGTERM, wait for the exit; (status, own CPU, children's CPU) of the command."""
        self.proc.send_signal(signal.SIGTERM)
        if not self.exited(STOP_TIMEOUT):
            raise BenchError(f"still running {STOP_TIMEOUT:.0f} s after SIGTERM")
        own, kids = proc_cpu(self.pid)
        return self.proc.wait(), own, kids

    def close(self) -> None:
        """Make sure the command is gone (graceful first, as a user would), and reaped."""
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)  # the second SIGTERM: the supervisor kills its workers
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        os.close(self.pidfd)
        self._log_file.close()

    def tail(self, lines: int = 15) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


Body = Callable[[Served, HandledReader], Result]


def run_command(args: Any, argv: list[str], env: dict[str, str], body: Body) -> tuple[Result, str]:
    """Launch ``argv`` with a FIFO for the handlers, run ``body(served, reader)``; its
    Result, and the command's log tail when it logged errors (the driver shows stderr)."""
    with tempfile.TemporaryDirectory(prefix="trioworker-bench-cli-") as tmp:
        reader = HandledReader(os.path.join(tmp, "handled"))
        env = {**os.environ, **env, HANDLED_ENV: reader.path, "BENCH_QUEUE": args.queue}
        served = Served(argv, env, Path(tmp, "command.log"))
        try:
            result = body(served, reader)
            log = served.log.read_text(errors="replace")
            noisy = "Traceback" in log or " ERROR " in log or "CRITICAL" in log
            return result, served.tail() if noisy else ""
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- {' '.join(argv)}:\n{served.tail()}") from None
        finally:
            served.close()
            reader.close()


@dataclass
class Progress:
    """What ``wait_for`` saw of each worker process: the pids in the order they first
    reported, the CPU each had used by then (its start: interpreter, imports, connect, one
    bulk) and the size of that first bulk."""

    pids: list[int] = field(default_factory=list)
    first_cpu: dict[int, float] = field(default_factory=dict)
    first_count: dict[int, int] = field(default_factory=dict)
    #: The launched command's own CPU at the first line of any worker (with ``--workers N``:
    #: the supervisor's start).
    command_cpu_at_first: float = 0.0


def wait_for(served: Served, reader: HandledReader, count: int, deadline: float) -> Progress:
    """Read handler lines until ``count`` messages were handled. Fails if the command exits
    first or ``deadline`` passes."""
    progress = Progress()
    while reader.total < count:
        left = deadline - now()
        if left <= 0:
            raise BenchError(f"timed out: {reader.total:,} of {count:,} messages handled")
        ready, _, _ = select.select([reader, served.pidfd], [], [], min(left, 1.0))
        if served.pidfd in ready:
            raise BenchError(f"exited early ({reader.total:,} of {count:,} messages handled)")
        for pid, handled in reader.read() if ready else ():
            if pid in progress.first_cpu:
                continue
            if not progress.pids:
                progress.command_cpu_at_first = proc_cpu(served.pid)[0]
            progress.pids.append(pid)
            progress.first_cpu[pid] = proc_cpu(pid)[0]
            progress.first_count[pid] = handled
    return progress


def workers(args: Any) -> Result:
    n = int(args.mode.removeprefix("workers-"))
    count: int = args.count
    argv = [str(BIN / "trioworker"), "run", "cli_app:app", "--workers", str(n),
            "--app-dir", str(HERE)]  # fmt: skip
    env = {"TRIOWORKER_AMQP_URL": args.url, "TRIOWORKER_PREFETCH": str(args.prefetch)}
    cpu_before = children_cpu()

    def body(served: Served, reader: HandledReader) -> Result:
        progress = wait_for(served, reader, count, served.started + args.timeout)
        handled_at = now()
        first_at = min(reader.first_seen.values())
        pids = progress.pids
        # Every process's CPU now, when the last message was handled: start | flow | stop.
        supervised = n > 1
        at_last = {pid: proc_cpu(pid)[0] for pid in pids}
        command_at_last = proc_cpu(served.pid)[0]
        rss = {pid: rss_mib(pid) for pid in pids}
        supervisor_rss = rss_mib(served.pid) if supervised else None
        # A worker that never handled a bulk (the queue was drained before it was up) spent
        # all its CPU on starting (and idling): start, not flow.
        idle = [p for p in children_of(served.pid) if p not in progress.first_cpu]
        start = sum(proc_cpu(pid)[0] for pid in idle) if supervised else 0.0
        status, own, _ = served.stop()
        if status != 0:
            raise BenchError(f"exit status {status} after SIGTERM")
        assert served.exited_at is not None
        total = children_cpu() - cpu_before
        start += sum(progress.first_cpu.values())
        flow = sum(at_last[pid] - progress.first_cpu[pid] for pid in pids)
        if supervised:  # the supervisor is not one of the workers
            start += progress.command_cpu_at_first
            flow += command_at_last - progress.command_cpu_at_first
        flow_messages = count - sum(progress.first_count.values())
        extra: dict[str, Any] = {
            "workers": n,
            "worker_pids": pids,  # the workers that handled messages
            "idle_workers": len(idle),
            "handled_s": round(handled_at - served.started, 4),
            "first_handled_s": round(first_at - served.started, 4),
            "consume_msg_per_s": round(flow_messages / (handled_at - first_at), 1),
            "stop_s": round(served.exited_at - handled_at, 4),
            "start_cpu_ms": round(start * 1e3, 1),
            "flow_cpu_us_per_msg": round(flow / flow_messages * 1e6, 2),
            "stop_cpu_ms": round((total - start - flow) * 1e3, 1),
            "worker_rss_mib": [round(rss[p], 1) for p in pids],
        }
        if supervised:
            extra["supervisor_cpu_ms"] = round(own * 1e3, 1)
            flow_own = command_at_last - progress.command_cpu_at_first
            extra["supervisor_flow_cpu_ms"] = round(flow_own * 1e3, 1)
            extra["supervisor_stop_cpu_ms"] = round((own - command_at_last) * 1e3, 1)
            extra["supervisor_rss_mib"] = round(supervisor_rss or 0.0, 1)
        return Result(
            system="trioworker", version=version("trioworker"), scenario="cli-workers",
            messages=reader.total, seconds=served.exited_at - served.started,
            rss_start_mb=rss[pids[0]], rss_end_mb=rss[pids[0]], cpu_seconds=total,
            extra=extra,
        )  # fmt: skip

    result, log = run_command(args, argv, env, body)
    result.extra["note"] = workers_note(result)
    if log:
        sys.stderr.write(log + "\n")
    return result


def workers_note(result: Result) -> str:
    e = result.extra
    note = (
        f"while messages flowed {e['consume_msg_per_s']:,.0f} msg/s and "
        f"{e['flow_cpu_us_per_msg']:.1f} us/msg; CPU of the start {e['start_cpu_ms']:.0f} ms, "
        f"of the stop {e['stop_cpu_ms']:.0f} ms"
    )
    if "supervisor_cpu_ms" in e:
        note += (
            f"; supervisor {e['supervisor_cpu_ms']:.0f} ms CPU"
            f" ({e['supervisor_flow_cpu_ms']:.0f} ms while messages flowed,"
            f" {e['supervisor_stop_cpu_ms']:.0f} ms in the stop), {e['supervisor_rss_mib']} MiB"
        )
    return note


def startup(args: Any) -> Result:
    system = args.mode.removeprefix("startup-")
    if system == "trioworker":
        argv = [str(BIN / "trioworker"), "run", "startup_app:app", "--app-dir", str(HERE)]
        env = {"TRIOWORKER_AMQP_URL": args.url, "TRIOWORKER_PREFETCH": str(args.prefetch)}
    else:
        argv = [str(BIN / "faststream"), "run", "startup_faststream_app:app",
                "--app-dir", str(HERE)]  # fmt: skip
        env = {"BENCH_URL": args.url}

    def body(served: Served, reader: HandledReader) -> Result:
        (pid,) = wait_for(served, reader, args.count, served.started + args.timeout).pids
        first = reader.first_seen[pid] - served.started
        if served.exited(args.idle):
            raise BenchError("exited while idle")
        rss, (cpu, _) = rss_mib(pid), proc_cpu(pid)
        status, _, _ = served.stop()
        if status != 0:
            raise BenchError(f"exit status {status} after SIGTERM")
        extra = {
            "startup_ms": round(first * 1e3, 1),
            "idle_rss_mib": round(rss, 1),
            "startup_cpu_ms": round(cpu * 1e3, 1),
            "worker_is_command": pid == served.pid,
            "idle_s": args.idle,
        }
        extra["note"] = (
            f"first message handled {first * 1e3:,.0f} ms after the launch; idle RSS "
            f"{rss:.1f} MiB; CPU until idle {cpu * 1e3:,.0f} ms"
        )
        return Result(
            system=system, version=version(system), scenario="startup", messages=reader.total,
            seconds=first, rss_start_mb=rss, rss_end_mb=rss, extra=extra,
        )  # fmt: skip

    result, log = run_command(args, argv, env, body)
    if log:
        sys.stderr.write(log + "\n")
    return result


def main() -> int:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
        parser.add_argument("--idle", type=float, default=2.0, help="startup: idle before RSS")

    modes = ("workers-1", "workers-2", "workers-4", "startup-trioworker", "startup-faststream")
    args = parse_args(__doc__ or "", modes, configure)
    run = startup if args.mode.startswith("startup-") else workers
    try:
        result = run(args)
    except BenchError as exc:  # the driver shows the last lines of stderr
        print(f"bench_cli.py {args.mode}: {exc}", file=sys.stderr)
        return 1
    result.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
