"""What the command functions share: the result base, the message log, loading a net
with its warnings, the phase choice, writing a net as an edit of its file, and the one
output transaction (see surgery/api/__init__.py for the conventions)."""

import contextlib

from ..errors import SurgeryError


class Result:
    """The base of every command function's result. `text` is what the command prints on
    stdout and `to_json()` what it prints with --json; `ok` is False where the command
    exits with status 1; `messages` the warnings and notes, [(kind, text)] in order."""

    ok = True
    messages = ()

    @property
    def text(self):
        raise NotImplementedError

    def to_json(self):
        raise NotImplementedError

    @property
    def warnings(self):
        return [text for kind, text in self.messages if kind == "warning"]


class Log:
    """The warnings and notes of one call: each is handed to `on_message(kind, text)` as
    it is found, when the caller gave one, and kept for the result (`done`)."""

    def __init__(self, on_message=None):
        self.on_message = on_message
        self.messages = []

    def warning(self, text):
        self._add("warning", text)

    def note(self, text):
        self._add("note", text)

    def _add(self, kind, text):
        self.messages.append((kind, text))
        if self.on_message is not None:
            self.on_message(kind, text)

    def done(self, result):
        """`result` with this call's messages."""
        result.messages = list(self.messages)
        return result


def load(path, *, strict=False, log):
    """The NetFile for `path` (io.netfile.load_net), its warnings told to `log`."""
    from ..io.netfile import load_net

    loaded = load_net(path, strict=strict)
    for warning in loaded.warnings:
        log.warning(warning)
    return loaded


def refuse_open_sizes(loaded, what):
    """SurgeryError at the first template placeholder that leaves a size open: `what`
    (weights, a head) needs every size."""
    numeric = loaded.numeric_placeholders
    if numeric:
        line, col = loaded.position(numeric[0])
        raise SurgeryError(f"template placeholder {numeric[0].text} leaves a size open; "
                           f"{what}", file=loaded.path, line=line, col=col)


def choose_phases(phase, net, *, log):
    """The phases to analyse: `phase`, else every phase in which the net builds (TEST
    first) that has layers of its own. A train file whose data layer exists only in TRAIN
    gets TRAIN; a train_val file both. A note says so when there was a choice."""
    from ..analysis.graph import complete_phases

    if phase:
        return [phase]
    built, failed = complete_phases(net)
    if not built:
        raise failed["TEST"]
    first, *others = built
    chosen = [first] + [p for p in others if _names(built[p]) != _names(built[first])]
    if failed:
        other, why = next(iter(failed.items()))
        why.hint = ""       # "try --phase" would name the phase being used
        log.note(f"using phase {first}, the one in which the net is complete (in {other}: {why})")
    elif len(chosen) > 1:
        log.note("the net builds in TEST and TRAIN with different layers: both are analysed "
                 "(--phase picks one)")
    return chosen


def _names(graph):
    return [node.name for node in graph.nodes]


def write_net(loaded, new, outputs, *, target, write, canonical=False, diff=False, log):
    """Render `new` as an edit of `loaded`'s file (io/preserve.py; `canonical`: protobuf's
    own formatting) and, when `write`, stage it in `outputs` for `target`. Returns the
    unified diff from the input to it when `diff`, else None."""
    from ..io.preserve import render, unified_diff

    text, why = render(loaded, new, canonical=canonical)
    if why:
        log.note(why)
    if write:
        outputs.write(target, text.encode("utf-8"), inputs=[loaded.path])
    if diff:
        return unified_diff(loaded.path, loaded.text, text, target or "(not written)")
    return None


@contextlib.contextmanager
def transaction(outputs, *, inputs, targets=(), in_place=False, progress=None):
    """The io.atomic.Outputs the call writes into: the caller's `outputs` as it is (the
    caller claimed its files and commits them), or a new one with `targets` (None
    skipped) claimed now, before the long work, and committed when the block ends without
    an error."""
    if outputs is not None:
        yield outputs
        return
    from ..io.atomic import Outputs

    with Outputs(inputs=inputs, in_place=in_place, progress=progress) as own:
        for path in targets:
            if path is not None:
                own.reserve(path)
        yield own
        own.commit()


class NetEdit:
    """One net being edited (bvlc, fcn, fold): `loaded` its file, `out` the transaction,
    `log` its messages, `target` where the edited net goes (None: not written)."""

    def __init__(self, loaded, out, log, target, dry_run):
        self.loaded, self.out, self.log, self.target = loaded, out, log, target
        self.dry_run = dry_run

    def write(self, new, *, canonical=False, diff=False):
        """Stage `new` as an edit of the file for `target` (not on a dry run); the diff
        when asked for, else None."""
        writes = not self.dry_run and self.target is not None
        if not (writes or diff):
            return None
        return write_net(self.loaded, new, self.out, target=self.target, write=writes,
                         canonical=canonical, diff=diff, log=self.log)


@contextlib.contextmanager
def editing(net, *, output, in_place, dry_run, weights, weights_out, strict, outputs,
            on_message, progress):
    """A NetEdit of the net at `net`: its output and `weights_out` claimed before the
    work (none on a dry run), the file loaded, everything committed when the block ends
    without an error."""
    target = net_target(net, output, in_place)
    log = Log(on_message)
    inputs = [net] + ([weights] if weights else [])
    claims = [] if dry_run else [target, weights_out]
    with transaction(outputs, inputs=inputs, targets=claims, in_place=in_place,
                     progress=progress) as out:
        yield NetEdit(load(net, strict=strict, log=log), out, log, target, dry_run)


def net_target(net, output, in_place):
    """Where a net's result goes: `output`, else over the input itself with `in_place`,
    else nowhere (None)."""
    import os

    if output is not None:
        return os.fspath(output)
    return os.fspath(net) if in_place else None


def paired_weights(weights, weights_out, dry_run, why):
    """SurgeryError unless `weights` and `weights_out` come together (a dry run may read
    weights only to check them): the rewritten layers' blobs change, `why`."""
    if bool(weights) != bool(weights_out) and not (dry_run and weights):
        raise SurgeryError(f"--weights and --weights-out go together ({why}, so the old "
                           "weights would not load)")
