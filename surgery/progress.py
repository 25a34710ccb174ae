"""One updating status line on stderr for long work, shown only to a person watching.

    with Progress(quiet=args.quiet) as progress:
        outputs = Outputs(..., progress=progress)   # "writing x.caffemodel: 312 MB"
        verify(..., progress=progress)              # "running vgg16.prototxt (opencv)"

A `Progress` is a callable taking one short text. Passes, engines and writers are given
it (or None) and call it; they never print. The line is drawn only while stderr is a
terminal and `quiet` is off: a pipe, a file or CI gets nothing, and stdout never does.
It is redrawn in place (carriage return, erase to the end of the line), at most ten
times a second, with the seconds the current step has taken, kept ticking by a daemon
thread while one step blocks (an engine's forward pass); it is erased on exit, before
any error line is printed.
"""

import sys
import threading
import time

ERASE = "\r\x1b[K"
INTERVAL = 0.1      # seconds between redraws
TICK = 1.0          # seconds between redraws of a step that sends no news


class Progress:
    """A status line (see the module docstring); a no-op unless it is `shown`."""

    def __init__(self, *, quiet=False, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.shown = not quiet and _is_terminal(self.stream)
        self._lock = threading.Lock()
        self._text, self._since, self._drawn_at = None, 0.0, 0.0
        self._stop = threading.Event()
        self._ticker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __call__(self, text):
        if not self.shown:
            return
        now = time.monotonic()
        with self._lock:
            if text.split(":")[0] != (self._text or "").split(":")[0]:
                self._since = now           # a new step: its clock starts
                self._drawn_at = 0.0
            self._text = text
            if now - self._drawn_at >= INTERVAL:
                self._draw(now)
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self):
        while not self._stop.wait(TICK):
            now = time.monotonic()
            with self._lock:
                if self._text is not None and now - self._drawn_at >= TICK:
                    self._draw(now)

    def _draw(self, now):
        seconds = int(now - self._since)
        line = f"caffe-surgery: {self._text}" + (f" ({seconds} s)" if seconds >= 2 else "")
        width = _columns(self.stream) - 1
        try:
            self.stream.write(ERASE + line[:width])
            self.stream.flush()
        except (OSError, ValueError):
            self.shown = False
        self._drawn_at = now

    def close(self):
        """Stop the ticker and erase the line (only if one was drawn)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self.shown and self._text is not None:
                try:
                    self.stream.write(ERASE)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
            self._text = None


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(stream):
    import os

    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return max(20, columns) if columns else 80     # 0: the terminal does not say
