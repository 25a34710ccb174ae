"""Outputs written all or none: a failed or interrupted run never leaves a half-written,
clobbered or stray file.

Every command writes through one `Outputs` transaction:

    with Outputs(inputs=[net, weights], in_place=args.in_place) as out:
        out.reserve(args.output); out.reserve(args.weights_out)   # before the long work
        ...
        out.write(args.output, text_bytes)         # into a temp file beside the target
        out.write(args.weights_out, produce)       # produce(fileobj) streams a caffemodel
        out.commit()                               # every temp file renamed onto its target

`reserve` claims a target at once by creating its temp file beside it, so a missing,
read-only, full or forbidden directory stops the run before any work, with the same
error the real write would get. `write` fills the temp file and fsyncs it (a streamed
one hands each 32 MB to the disk as it goes, so the fsync waits for little); `commit`
renames every temp file onto its target only once all are complete (restoring any
target it already replaced if a later rename fails), then fsyncs the directories.
Leaving the `with` block without `commit` (an error, Ctrl-C, a refusal) removes every
temp file: no target is created and a pre-existing one keeps its bytes.

A SIGKILL cannot be caught: it may leave temp files, never a partial target. They are
named `.NAME.caffe-surgery-tmp-XXXXXXXX` (TEMP_MARK), hidden, recognisable and unique,
so a later run neither trips over them nor mistakes them for output; delete them at will.
"""

import errno
import os
import stat
import threading

from ..errors import SurgeryError, os_reason

TEMP_MARK = ".caffe-surgery-tmp-"
# The output's buffer gathers the small writes (field headers). It is smaller than the
# pieces a streamed blob is written in (up to 1 MB): Python's buffered writer hands a
# write larger than its buffer to the OS as it is, and copies a smaller one into the
# buffer first, which for 1 MB pieces in a 1 MB buffer was a second copy of every byte.
BUFFER = 64 << 10
MB = 1 << 20
WRITEBACK = 32 * MB     # how much a streamed output writes between starts of writeback


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def guard_output(path, inputs=(), *, in_place=False):
    """Refuse to overwrite an input unless the user asked for it (--in-place)."""
    for src in inputs:
        if src is not None and _same_file(path, src) and not in_place:
            raise SurgeryError(
                f"output {path} is the input file; choose another -o or pass --in-place"
            )


def temp_prefix(path):
    """The start of `path`'s temp file names: hidden, beside it, naming it (cut so that
    the whole name stays under the usual 255-byte limit)."""
    return "." + os.path.basename(path)[:200] + TEMP_MARK


def _random_tag():
    """Eight random hex digits: what makes a temp name unique."""
    return os.urandom(4).hex()


def _create_temp(folder, prefix):
    """(fd, path) of a new, empty, private file in `folder` whose name starts with
    `prefix`, created exclusively (as tempfile.mkstemp does; that module's imports cost a
    command's start-up more than this)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
        getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, prefix + _random_tag())
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp file name", folder)


def output_error(exc, path):
    """The one-line error for an OSError met while writing `path`."""
    reason = os_reason(exc)
    if exc.errno == errno.EFBIG:
        reason = _size_limit(reason)
    return SurgeryError(f"cannot write: {reason}; nothing was written", file=path)


def _size_limit(reason):
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return reason
    return f"{reason.split(' (')[0]} (the file-size limit, `ulimit -f`, is {soft:,} bytes)"


class _Target:
    def __init__(self, path, temp):
        self.path, self.temp, self.written = path, temp, False


class _Sink:
    """The file object a producer writes to: an OSError on write becomes the one-line
    error naming the target (not the temp file), and the bytes written feed `progress`."""

    def __init__(self, handle, path, progress):
        self.handle, self.path, self.progress = handle, path, progress
        self.count, self.shown, self.flushed = 0, -1, 0
        self.writeback = None

    def write(self, data):
        try:
            written = self.handle.write(data)
        except OSError as exc:
            raise output_error(exc, self.path) from None
        self.count += len(data) if written is None else written
        if self.count - self.flushed >= WRITEBACK:
            self._start_writeback()
        if self.progress is not None and self.count // MB != self.shown:
            self.shown = self.count // MB
            self.progress(f"writing {os.path.basename(self.path)}: {self.shown:,} MB")
        return written


    def _start_writeback(self):
        """Hand what is written so far to the disk now, from a thread, without waiting
        for it: the fsync at the end then has only the tail left to wait for, and the
        disk works while the producer computes the rest (nothing where the OS lacks the
        call)."""
        try:
            self.handle.flush()
        except OSError as exc:
            raise output_error(exc, self.path) from None
        self.finish_writeback()
        if hasattr(os, "posix_fadvise"):
            self.writeback = threading.Thread(
                target=_advise_written, args=(self.handle.fileno(), self.flushed,
                                              self.count - self.flushed), daemon=True)
            self.writeback.start()
        self.flushed = self.count

    def finish_writeback(self):
        if self.writeback is not None:
            self.writeback.join()
            self.writeback = None


def _advise_written(fd, start, length):
    try:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass        # only advice: the fsync that follows reports any real failure


class Outputs:
    """The files one command writes, all or none (see the module docstring)."""

    def __init__(self, *, inputs=(), in_place=False, progress=None):
        self.inputs = [p for p in inputs if p is not None]
        self.in_place = in_place
        self.progress = progress
        self._targets = {}     # absolute path -> _Target, in the order reserved

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()
        return False

    def reserve(self, path, *, inputs=()):
        """Claim `path` now: refuse an input (unless in_place), a second claim on the same
        file, a directory or a non-regular file; create its temp file beside it, which
        fails as the real write would (no such directory, permission, read-only, full)."""
        key = os.path.abspath(path)
        guard_output(path, self.inputs + [p for p in inputs if p is not None],
                     in_place=self.in_place)
        for other in self._targets.values():
            if _same_file(path, other.path):
                raise SurgeryError(f"named as two outputs ({other.path} and {path}); each "
                                   "output needs a file of its own", file=path)
        _check_target(path)
        folder = os.path.dirname(key)
        try:
            fd, temp = _create_temp(folder, temp_prefix(path))
        except FileNotFoundError as exc:
            if os.path.isdir(folder):     # /proc: a directory that takes no new files
                raise output_error(exc, path) from None
            raise SurgeryError(f"cannot write: directory {folder} does not exist; nothing "
                               "was written", file=path) from None
        except OSError as exc:
            raise output_error(exc, path) from None
        os.close(fd)
        self._targets[key] = target = _Target(path, temp)
        return target

    def staged(self, path):
        """The temp file holding `path`'s content until commit (to check what was written)."""
        return self._targets[os.path.abspath(path)].temp

    def write(self, path, data, *, inputs=()):
        """Fill `path`'s temp file with `data`: bytes, or a function that writes to the
        file object it is given (a streamed caffemodel). Flushed and fsynced before it
        returns; the target itself is untouched until commit. Returns the temp path."""
        target = self._targets.get(os.path.abspath(path)) or self.reserve(path, inputs=inputs)
        try:
            handle = open(target.temp, "wb", buffering=BUFFER)
        except OSError as exc:
            raise output_error(exc, path) from None
        try:
            sink = _Sink(handle, path, self.progress)
            if callable(data):
                data(sink)
            else:
                sink.write(data)
            sink.finish_writeback()
            try:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            except OSError as exc:
                raise output_error(exc, path) from None
        finally:
            _close_quietly(handle)   # after a failed write, closing fails again: not news
        target.written = True
        return target.temp

    def commit(self):
        """Rename every written temp file onto its target; all or none. A target already
        replaced when a later rename fails is put back from a hard link kept meanwhile."""
        written = [t for t in self._targets.values() if t.written]
        done = []     # (target, whether it existed, backup path or None)
        current = None
        try:
            for current in written:
                _set_mode(current)
                existed = os.path.lexists(current.path)
                backup = _link_backup(current.path) if existed else None
                os.replace(current.temp, current.path)
                done.append((current, existed, backup))
        except BaseException as exc:
            for target, existed, backup in reversed(done):
                _restore(target.path, existed, backup)
            if isinstance(exc, OSError):
                raise output_error(exc, current.path) from None
            raise
        finally:
            for _, _, backup in done:
                _remove(backup)
        for target in written:
            del self._targets[os.path.abspath(target.path)]
        for folder in {os.path.dirname(os.path.abspath(t.path)) for t in written}:
            _sync_dir(folder)
        self.discard()

    def discard(self):
        """Remove every temp file not committed (a reservation never written too)."""
        for target in self._targets.values():
            _remove(target.temp)
        self._targets.clear()


def _check_target(path):
    """What no temp file can tell: the target is a directory, or a FIFO, device or socket
    (a rename would replace the special file itself: /dev/null as root)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise output_error(exc, path) from None
    if stat.S_ISDIR(info.st_mode):
        raise SurgeryError("cannot write: is a directory; give a file name", file=path)
    if not stat.S_ISREG(info.st_mode):
        raise SurgeryError("cannot write: not a regular file (a device, FIFO or socket); "
                           "outputs are written to a temporary file and renamed onto their "
                           "target, which would replace it: give a file name", file=path)


def _set_mode(target):
    """The target's permissions: the old file's if it exists, else what the umask allows
    (mkstemp made the temp file 0600)."""
    try:
        mode = os.stat(target.path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(target.temp, mode)


def _link_backup(path):
    """A hard link to the existing target (None when the file system has no hard links:
    the rollback then leaves the new file there rather than lose both)."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        backup = os.path.join(folder, temp_prefix(path) + "old-" + _random_tag())
        try:
            os.link(path, backup)
            return backup
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def _restore(path, existed, backup):
    try:
        if not existed:
            os.unlink(path)
        elif backup is not None:
            os.replace(backup, path)
    except OSError:
        pass


def _close_quietly(handle):
    try:
        handle.close()
    except OSError:
        pass


def _remove(path):
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_dir(folder):
    """Make the renames durable; a file system that cannot fsync a directory is left be."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path, data, *, inputs=(), in_place=False, outputs=None):
    """Write one output (bytes, or a function given the file object) all or none. With
    `outputs`, a transaction the caller commits, the content is only staged in it."""
    if outputs is not None:
        return outputs.write(path, data, inputs=inputs)
    with Outputs(inputs=inputs, in_place=in_place) as out:
        out.write(path, data)
        out.commit()
    return None
