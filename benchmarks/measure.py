"""Run a command in a fresh process and measure its wall time and peak RSS.

`os.wait4` returns the resource usage of exactly the child it reaps, so each
measurement is per child, not the cumulative RUSAGE_CHILDREN of the session. The
child is started by a small launcher process (LAUNCH), not by this one: Linux carries
the peak RSS of the process that execs over into the new program's, so a command
started straight from a benchmark script that has grown (built a net, loaded a model)
would report the script's memory as its own.
"""

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple


class Sample(NamedTuple):
    seconds: float        # fastest wall time over the repeats
    rss_mb: float         # largest peak RSS over the repeats (MiB)
    returncode: int       # of the last repeat
    stdout: str
    stderr: str
    times: tuple = ()     # every run's wall time, in order (measure_alternating)


# Starts the command, waits for it, and writes its wall time, its own peak RSS (KiB) and
# its exit status to the file argv[1]. The command's peak is its own: this launcher is
# small (a bare interpreter, below any Python command's own peak).
LAUNCH = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{seconds!r} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_once(argv, *, cwd=None, timeout=600):
    """(seconds, peak RSS MiB, returncode, stdout, stderr) of one fresh child process."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp"))
    with open(os.devnull, "rb") as stdin, _spool(out_path) as out, \
            _spool(out_path) as err, _named(out_path) as report:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, report, *argv], stdin=stdin,
                                stdout=out, stderr=err, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)     # the launcher and the command
            proc.wait()
        with open(report) as f:
            fields = f.read().split()
        seconds, kib, returncode = (float(fields[0]), int(fields[1]), int(fields[2])) \
            if len(fields) == 3 else (float(timeout), 0, proc.returncode)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return seconds, kib / 1024, returncode, stdout, stderr    # Linux reports KiB


def _spool(directory):
    import tempfile

    return tempfile.TemporaryFile(dir=directory)


@contextlib.contextmanager
def _named(directory):
    """The path of an empty temp file, removed afterwards."""
    import tempfile

    fd, path = tempfile.mkstemp(dir=directory)
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def measure(argv, *, repeat=1, cwd=None, timeout=600):
    """Fastest time and max RSS over `repeat` fresh runs of argv.

    The fastest run is the one least disturbed by other load on the machine."""
    runs = [run_once(argv, cwd=cwd, timeout=timeout) for _ in range(repeat)]
    last = runs[-1]
    return Sample(min(r[0] for r in runs), max(r[1] for r in runs),
                  last[2], last[3], last[4])


def measure_alternating(argvs, *, repeat=1, cwd=None, timeout=600, settle=False):
    """`measure` of several commands run in turn (A, B, C, A, B, C, ...), so that load on
    the machine that comes and goes falls on all of them alike: their ratio is fair.
    `settle`: the disk is flushed (os.sync, not timed) before each run, so that a command
    that writes large files without waiting for the disk does not leave the flushing of
    its data to the run after it."""
    runs = [[] for _ in argvs]
    for _ in range(repeat):
        for argv, got in zip(argvs, runs):
            if settle:
                os.sync()
            got.append(run_once(argv, cwd=cwd, timeout=timeout))
    return [Sample(min(r[0] for r in got), max(r[1] for r in got), got[-1][2], got[-1][3],
                   got[-1][4], tuple(r[0] for r in got)) for got in runs]


def paired_ratio(a, b):
    """The median over rounds of a's time over b's in the same round (two Samples from
    one measure_alternating): steadier than the ratio of the fastest runs when the
    machine's speed drifts, as each round's pair ran side by side."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def cli_argv():
    """How to start caffe-surgery: the console script beside this Python, else -m surgery."""
    script = Path(sys.executable).with_name("caffe-surgery")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "surgery"]
