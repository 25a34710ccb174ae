"""Faults never cost data (issue 26, docs/faults.md).

Every case runs the real command line in a child process (`python -m surgery`, this
checkout first on PYTHONPATH) and asserts its exit status, exactly one line on stderr
and no traceback, and that no file is left behind: no target, no temp file, and every
pre-existing target byte for byte as it was. The faults are real ones, not mocks:
directories under /proc and /sys, a 1 MB tmpfs (ENOSPC) and a read-only one (EROFS),
RLIMIT_FSIZE (EFBIG), a FIFO and a device as input, Ctrl-C, SIGTERM and SIGKILL in the
middle of a 500 MB write. Mounting needs root and is skipped where it is refused.
"""

import hashlib
import os
import pty
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surgery.cli import main
from surgery.io.atomic import TEMP_MARK, Outputs
from surgery.io.caffemodel import read_caffemodel
from surgery.io.prototxt import save_prototxt
from surgery.models import build

from test_no_data_loss import LEGACY   # a V1 net for `upgrade`

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), "PYTHONDONTWRITEBYTECODE": "1"}
KNOWN = b"precious bytes that must survive\n"
MB = 1 << 20

# 32000 inputs x 4096 outputs: one 524 MB caffemodel, drawn in about 3 s.
WIDE = """name: "wide"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 32000 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 4096 } }
"""


def cli(*argv, prefix=(), timeout=120, **kw):
    """Run `caffe-surgery ARGV` as a child process; the CompletedProcess (text)."""
    return subprocess.run([*prefix, sys.executable, "-m", "surgery", *map(str, argv)], env=ENV,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def assert_one_error(proc, *words, status=2):
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("caffe-surgery: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert proc.stdout == "", proc.stdout   # no summary of a run that wrote nothing


def snapshot(folder):
    """{relative path: sha256} of every file under folder, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def temp_files(folder):
    return [p for p in Path(folder).rglob("*") if TEMP_MARK in p.name]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Inputs, never written by the tests: a narrow VGG-16 (3 MB of weights), its
    weights, and a legacy net for `upgrade`."""
    folder = tmp_path_factory.mktemp("faults-inputs")
    save_prototxt(build("vgg16", width=0.125, fc_width=128), folder / "vgg.prototxt")
    (folder / "legacy.prototxt").write_text(LEGACY)
    (folder / "vgg_test.prototxt").write_bytes((folder / "vgg.prototxt").read_bytes())
    save_prototxt(build("resnet50", width=0.125, input_size=64), folder / "res.prototxt")
    assert main(["init-weights", str(folder / "res.prototxt"), "-o",
                 str(folder / "res.caffemodel"), "--quiet"]) == 0
    assert main(["init-weights", str(folder / "vgg.prototxt"), "-o",
                 str(folder / "vgg.caffemodel"), "--quiet"]) == 0
    return folder


@pytest.fixture
def untouched(work):
    """Asserts after the test that the inputs are as they were."""
    before = snapshot(work)
    yield
    assert snapshot(work) == before


NET, WEIGHTS = "{w}/vgg.prototxt", "{w}/vgg.caffemodel"
DILATE = ["dilate", NET, "-s", "8", "--head", "cut"]
FCN = ["fcn", NET, "--weights", WEIGHTS]
SEGMENT = ["segment", NET, "--head", "aspp", "--classes", "5", "--crop", "65", "--data",
           "input", "--weights", WEIGHTS]
FOLD = ["fold", "{w}/res.prototxt", "--weights", "{w}/res.caffemodel"]
BVLC = ["bvlc", NET, "--weights", WEIGHTS]

# Every output of every command, OUT standing for the one that fails; the others go to
# the test's own folder ({o}), which must stay empty: all or none.
OUTPUTS = {
    "upgrade -o": ["upgrade", "{w}/legacy.prototxt", "-o", "OUT"],
    "dilate -o": DILATE + ["-o", "OUT", "--diff", "{o}/os8.diff"],
    "dilate --diff": DILATE + ["-o", "{o}/os8.prototxt", "--diff", "OUT"],
    "dilate --weights-out": DILATE + ["--weights", WEIGHTS, "-o", "{o}/os8.prototxt",
                                      "--diff", "{o}/os8.diff", "--weights-out", "OUT"],
    "init-weights -o": ["init-weights", NET, "-o", "OUT"],
    "fcn -o": FCN + ["--weights-out", "{o}/fcn.caffemodel", "--diff", "{o}/fcn.diff",
                     "-o", "OUT"],
    "fcn --weights-out": FCN + ["-o", "{o}/fcn.prototxt", "--weights-out", "OUT"],
    "fcn --diff": FCN + ["-o", "{o}/fcn.prototxt", "--weights-out", "{o}/fcn.caffemodel",
                         "--diff", "OUT"],
    "segment -o": SEGMENT + ["--deploy", "{o}/deploy.prototxt", "--weights-out",
                             "{o}/init.caffemodel", "-o", "OUT"],
    "segment --deploy": SEGMENT + ["-o", "{o}/train.prototxt", "--weights-out",
                                   "{o}/init.caffemodel", "--deploy", "OUT"],
    "segment --weights-out": SEGMENT + ["-o", "{o}/train.prototxt", "--deploy",
                                        "{o}/deploy.prototxt", "--weights-out", "OUT"],
    "segment --solver": SEGMENT + ["-o", "{o}/train.prototxt", "--deploy",
                                   "{o}/deploy.prototxt", "--weights-out",
                                   "{o}/init.caffemodel", "--solver", "OUT"],
    "report -o": ["report", NET, "-o", "OUT"],
    "fold -o": FOLD + ["--weights-out", "{o}/fold.caffemodel", "-o", "OUT"],
    "fold --weights-out": FOLD + ["-o", "{o}/fold.prototxt", "--weights-out", "OUT"],
    "bvlc -o": BVLC + ["--weights-out", "{o}/bvlc.caffemodel", "-o", "OUT"],
    "bvlc --weights-out": BVLC + ["-o", "{o}/bvlc.prototxt", "--weights-out", "OUT"],
}

# Where an output cannot be: a directory that does not exist, a directory that takes no
# new files (/proc), and one the kernel keeps for itself (/sys: EACCES, EPERM or EROFS).
PLACES = {
    "proc-missing-dir": "/proc/caffe-surgery-no-such-dir/out",
    "proc": "/proc/caffe-surgery-out",
    "sys": "/sys/caffe-surgery-out",
}


def argv_for(template, work, folder, out):
    return [out if a == "OUT" else a.format(w=work, o=folder) for a in template]


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_an_output_that_cannot_be_written_is_one_line_and_writes_nothing(
        work, untouched, tmp_path, case, place):
    out = PLACES[place]
    proc = cli(*argv_for(OUTPUTS[case], work, tmp_path, out))
    assert_one_error(proc, out, "cannot write")
    assert not os.path.exists(out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_several_nets_into_a_folder_that_takes_no_files_write_nothing(work, untouched,
                                                                      folder):
    """dilate TRAIN TEST -o DIR: both results or neither."""
    proc = cli("dilate", f"{work}/vgg.prototxt", f"{work}/vgg_test.prototxt", "-s", "8",
               "--head", "cut", "-o", folder)
    assert_one_error(proc, f"{folder}/vgg", "cannot write")
    assert not any(os.path.exists(f"{folder}/{n}.prototxt") for n in ("vgg", "vgg_test"))


def test_the_failing_output_is_found_before_the_work(work, tmp_path):
    """The last-named output is unwritable: the run stops when it is claimed, before any
    weights are read or drawn; the message names it."""
    proc = cli(*argv_for(OUTPUTS["segment --deploy"], work, tmp_path,
                         "/proc/caffe-surgery-no-such-dir/deploy.prototxt"))
    assert_one_error(proc, "directory /proc/caffe-surgery-no-such-dir does not exist")


@pytest.mark.parametrize("case,make,words", [
    ("a directory", lambda p: p.mkdir(), ["is a directory"]),
    ("inside a file", None, ["not a directory"]),
    ("a FIFO", lambda p: os.mkfifo(p), ["not a regular file"]),
])
def test_an_output_that_is_no_file_is_refused(work, untouched, tmp_path, case, make, words):
    out = tmp_path / "target"
    if make is not None:
        make(out)
    else:
        out.write_bytes(KNOWN)
        out = out / "below"
    before = snapshot(tmp_path)
    proc = cli(*argv_for(OUTPUTS["dilate -o"], work, tmp_path, out), timeout=30)
    assert_one_error(proc, str(out), *words)
    assert snapshot(tmp_path) == before and not temp_files(tmp_path)


def test_dev_null_is_refused_and_stays_a_device(work, tmp_path):
    """Renaming a temp file onto /dev/null would replace the device (as root): refused."""
    proc = cli(*argv_for(OUTPUTS["init-weights -o"], work, tmp_path, "/dev/null"))
    assert_one_error(proc, "/dev/null", "not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [p for p in os.listdir("/dev") if TEMP_MARK in p]


# ------------------------------------------------------------ full and read-only disks

@pytest.fixture
def mounted(tmp_path):
    """mount(options) -> a fresh tmpfs mounted with those options; unmounted at the end.
    Skips where mounting is not allowed (not root, no CAP_SYS_ADMIN, no mount(8))."""
    points = []

    def mount(options):
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


# Commands whose every output goes to the small disk ({o}), the weights not fitting in it.
FULL = {
    "init-weights": ["init-weights", NET, "-o", "{o}/w.caffemodel"],
    "dilate": DILATE + ["--weights", WEIGHTS, "-o", "{o}/os8.prototxt", "--diff",
                        "{o}/os8.diff", "--weights-out", "{o}/os8.caffemodel"],
    "fcn": FCN + ["-o", "{o}/fcn.prototxt", "--weights-out", "{o}/fcn.caffemodel"],
    "segment": SEGMENT + ["-o", "{o}/train.prototxt", "--deploy", "{o}/deploy.prototxt",
                          "--weights-out", "{o}/init.caffemodel"],
    "fold": FOLD + ["-o", "{o}/fold.prototxt", "--weights-out", "{o}/fold.caffemodel"],
    "bvlc": BVLC + ["-o", "{o}/bvlc.prototxt", "--weights-out", "{o}/bvlc.caffemodel"],
}


@pytest.mark.parametrize("case", sorted(FULL))
def test_a_full_disk_is_one_line_and_leaves_every_target_as_it_was(work, untouched, mounted,
                                                                    case):
    disk = mounted("size=1m")
    first = disk / next(a for a in FULL[case] if a.startswith("{o}/"))[len("{o}/"):]
    first.write_bytes(KNOWN)       # a pre-existing target keeps its bytes
    proc = cli(*argv_for(FULL[case], work, disk, None))
    assert_one_error(proc, "no space left on device", "nothing was written")
    assert snapshot(disk) == {first.name: hashlib.sha256(KNOWN).hexdigest()}


def test_a_read_only_disk_is_one_line(work, untouched, mounted):
    disk = mounted("ro,size=1m")
    proc = cli(*argv_for(FULL["segment"], work, disk, None))
    assert_one_error(proc, str(disk), "read-only file system")
    assert list(disk.iterdir()) == []


# ------------------------------------------------------------ the file-size limit

def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


@pytest.mark.parametrize("case", sorted(FULL))
def test_the_file_size_limit_is_one_line_not_a_signal(work, untouched, tmp_path, case):
    """Over RLIMIT_FSIZE (`ulimit -f`) the kernel sends SIGXFSZ, which would kill the
    process; it is ignored, so the write fails with EFBIG and is reported."""
    proc = cli(*argv_for(FULL[case], work, tmp_path, None), preexec_fn=_limit_file_size)
    assert_one_error(proc, "file too large", "ulimit -f", "262,144 bytes")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ inputs

def _unreadable(path):
    """Make `path` unreadable; the prefix that keeps root from reading it anyway (root
    without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH obeys the mode bits)."""
    path.chmod(0)
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv(1) to drop the DAC capabilities")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


INPUT_KINDS = ("missing", "directory", "fifo", "device", "unreadable")


def _bad_input(kind, folder, good):
    """(path, prefix, words) for an input of this kind, made in folder from `good`."""
    path = folder / ("in" + good.suffix)
    prefix = []
    if kind == "directory":
        path.mkdir()
        return path, prefix, ["is a directory"]
    if kind == "fifo":
        os.mkfifo(path)
        return path, prefix, ["not a regular file"]
    if kind == "device":
        return Path("/dev/zero"), prefix, ["not a regular file"]
    if kind == "unreadable":
        shutil.copy(good, path)
        return path, _unreadable(path), ["permission denied"]
    return path, prefix, ["no such file"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("which", ["prototxt", "caffemodel"])
def test_an_input_that_cannot_be_read_is_one_line(work, untouched, tmp_path, which, kind):
    """Never a hang (a FIFO with no writer, a device that never ends): refused at once."""
    good = work / ("vgg.prototxt" if which == "prototxt" else "vgg.caffemodel")
    path, prefix, words = _bad_input(kind, tmp_path, good)
    out = tmp_path / "out.prototxt"
    if which == "prototxt":
        argv = ["dilate", path, "-s", "8", "--head", "cut", "-o", out]
    else:
        argv = ["dilate", work / "vgg.prototxt", "-s", "8", "--head", "cut", "--weights", path,
                "-o", out]
    proc = cli(*argv, prefix=prefix, timeout=30)
    assert_one_error(proc, str(path), *words)
    assert not out.exists() and not temp_files(tmp_path)


# ------------------------------------------------------------ signals mid-write

def _start_big_write(folder):
    """init-weights writing the 524 MB WIDE net into folder, once its temp file holds
    50 MB (the write is under way, far from done): (process, target)."""
    net, target = folder / "wide.prototxt", folder / "wide.caffemodel"
    net.write_text(WIDE)
    # SIGINT as a terminal delivers it: a shell starts background jobs with it ignored,
    # and a program started so keeps ignoring it (nohup's meaning), as Python does
    proc = subprocess.Popen([sys.executable, "-m", "surgery", "init-weights", str(net), "-o",
                             str(target)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        temps = temp_files(folder)
        if temps and _size(temps[0]) >= 50 * MB:
            return proc, target
        if proc.poll() is not None:
            pytest.fail(f"the write ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail("the 500 MB write never got to 50 MB")


def _size(path):
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig,status,line", [
    (signal.SIGINT, 130, "caffe-surgery: interrupted"),
    (signal.SIGTERM, 143, "caffe-surgery: terminated"),
])
def test_interrupted_mid_write_leaves_nothing(tmp_path, sig, status, line):
    proc, target = _start_big_write(tmp_path)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    assert stderr.splitlines() == [line] and stdout == ""
    assert not target.exists() and not temp_files(tmp_path)


def test_killed_mid_write_leaves_no_target_and_the_next_run_succeeds(work, tmp_path):
    """SIGKILL cannot be caught: the temp file stays, hidden and named as one, never as
    the target; the next run writes the target beside it."""
    proc, target = _start_big_write(tmp_path)
    proc.kill()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and stderr == "" and stdout == ""
    assert not target.exists()
    stale = temp_files(tmp_path)
    assert len(stale) == 1 and stale[0].name.startswith(".wide.caffemodel" + TEMP_MARK)
    again = cli("init-weights", work / "vgg.prototxt", "-o", target)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert [layer.name for layer in read_caffemodel(target).layers][0] == "conv1_1"
    assert temp_files(tmp_path) == stale        # left be, not taken for output
    stale[0].unlink()


# ------------------------------------------------------------ the transaction itself

def test_a_failed_rename_puts_back_the_targets_already_replaced(tmp_path, monkeypatch):
    """All or none even when the second of two renames fails: the first target gets its
    old bytes back, a target that did not exist is removed, no temp file stays."""
    old, new = tmp_path / "old.prototxt", tmp_path / "new.prototxt"
    old.write_bytes(KNOWN)
    third = tmp_path / "third.prototxt"
    real = os.replace

    def failing(src, dst):
        if str(dst) == str(third):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with Outputs() as outputs:
        for path in (old, new, third):
            outputs.write(path, b"new content\n")
        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(Exception, match="third.prototxt: cannot write: no space left"):
            outputs.commit()
    monkeypatch.undo()
    assert snapshot(tmp_path) == {"old.prototxt": hashlib.sha256(KNOWN).hexdigest()}


@pytest.mark.parametrize("advice", ["works", "fails", "missing"])
def test_a_streamed_output_handed_to_the_disk_in_parts_is_written_whole(tmp_path, monkeypatch,
                                                                        advice):
    """A streamed output starts the disk's writeback every WRITEBACK bytes, from a thread,
    while the producer goes on: the file holds exactly the bytes written, in order, when
    the advice works, when it fails (it is only advice), and where the OS lacks it."""
    import surgery.io.atomic as atomic

    monkeypatch.setattr(atomic, "WRITEBACK", MB)
    calls = []
    if advice == "fails":
        def refuse(fd, start, length, how):
            calls.append((start, length))
            raise OSError(22, "Invalid argument")
        monkeypatch.setattr(os, "posix_fadvise", refuse)
    elif advice == "missing":
        monkeypatch.delattr(os, "posix_fadvise", raising=False)
    elif hasattr(os, "posix_fadvise"):
        real = os.posix_fadvise
        monkeypatch.setattr(os, "posix_fadvise",
                            lambda fd, start, length, how: (calls.append((start, length)),
                                                            real(fd, start, length, how))[1])
    pieces = [bytes([i % 251]) * (300_000 + 7 * i) for i in range(20)]     # about 6 MB

    def produce(out):
        for piece in pieces:
            out.write(piece)

    target = tmp_path / "streamed.caffemodel"
    with Outputs() as outputs:
        outputs.write(target, produce)
        outputs.commit()
    assert target.read_bytes() == b"".join(pieces)
    if advice != "missing" and hasattr(atomic.os, "posix_fadvise"):
        # every range advised once, in order, each starting where the last one ended
        assert len(calls) >= 5 and calls[0][0] == 0
        assert all(a[0] + a[1] == b[0] for a, b in zip(calls, calls[1:]))


def test_two_outputs_naming_one_file_are_refused(work, untouched, tmp_path):
    out = tmp_path / "same.prototxt"
    proc = cli(*argv_for(DILATE, work, tmp_path, None), "-o", out, "--diff", out)
    assert_one_error(proc, "named as two outputs")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ progress on a terminal

def _on_a_terminal(argv, **kw):
    """Run the CLI with stderr on a pseudo-terminal, stdout on a pipe: (rc, what the
    terminal showed, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "surgery", *map(str, argv)], env=ENV,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True, **kw)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            pytest.fail("no output from the child on its terminal in 60 s")
        try:
            chunk = os.read(master, 65536)
        except OSError:      # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    return proc.returncode, shown.decode("utf-8", "replace"), stdout


def test_progress_shows_the_megabytes_written_on_a_terminal_only(work, tmp_path):
    argv = ["init-weights", work / "vgg.prototxt", "-o", tmp_path / "w.caffemodel"]
    rc, shown, stdout = _on_a_terminal(argv)
    assert rc == 0
    assert "\r\x1b[Kcaffe-surgery: writing w.caffemodel: " in shown and " MB" in shown
    assert shown.endswith("\r\x1b[K")                 # the line is erased at the end
    assert stdout.startswith("wrote ") and "\r" not in stdout and "MB" not in stdout
    quiet = _on_a_terminal(argv + ["--quiet"])
    assert quiet[0] == 0 and quiet[1] == ""
    piped = cli(*argv)
    assert piped.returncode == 0 and piped.stderr == ""


def test_verify_progress_names_the_net_being_run(work, tmp_path):
    pytest.importorskip("cv2")
    converted = tmp_path / "os8.prototxt"
    assert cli(*argv_for(DILATE, work, tmp_path, None), "-o", converted).returncode == 0
    argv = ["verify", work / "vgg.prototxt", converted, "--weights", work / "vgg.caffemodel",
            "--engine", "opencv", "--input-shape", "data=1,3,64,64"]
    rc, shown, stdout = _on_a_terminal(argv)
    assert rc == 0, shown
    assert "caffe-surgery: running the original net vgg.prototxt (opencv)" in shown
    assert "caffe-surgery: running the converted net os8.prototxt (opencv)" in shown
    assert shown.endswith("\r\x1b[K") and "PASS" in stdout and "\r" not in stdout
    piped = cli(*argv)
    assert piped.returncode == 0 and piped.stderr == ""


def test_an_error_after_progress_is_still_one_clean_line(work, tmp_path):
    """The progress line is erased before the error is printed."""
    argv = ["init-weights", work / "vgg.prototxt", "-o", tmp_path / "w.caffemodel"]
    rc, shown, stdout = _on_a_terminal(argv, preexec_fn=_limit_file_size)
    assert rc == 2 and stdout == ""
    progress, error = shown.rsplit("\r\x1b[K", 1)
    assert "caffe-surgery: writing w.caffemodel: 0 MB" in progress
    assert error.startswith("caffe-surgery: error: ") and error.count("\n") == 1
    assert "file too large" in error and list(tmp_path.iterdir()) == []
