"""caffe-surgery: model surgery for Caffe networks.

Every command is a function here that returns data (a result with `.text`, what the
command prints, and `.to_json()`, what it prints with --json) and never prints or exits:
`surgery.dilate("deploy.prototxt", output_stride=8, head="cut").text`. Files go in as
paths and outputs are written all or none; the conventions are in surgery/api/__init__.py
and docs/api.md. `load`, `save` and `analyse` work on NetParameters in memory.

The functions are short wrappers that import their module when called, so `import
surgery` stays cheap (the CLI pays only for the command it runs). See README.md for the
command line and DESIGN.md for how the package is laid out.
"""

__version__ = "0.1.0"

_TEXT_SUFFIXES = (".prototxt", ".pt", ".txt", ".prototext", ".pbtxt")
_BINARY_TYPES = {".caffemodel": "NetParameter", ".binaryproto": "BlobProto"}


def _suffix(path):
    import os

    return os.path.splitext(os.fspath(path))[1].lower()


def load(path, *, upgrade=True):
    """Load a net or blob by extension: text prototxt, or binary .caffemodel/.binaryproto.

    Text nets are upgraded to the current format unless upgrade=False. A
    .caffemodel is decoded whole here, which suits small files; for large
    models, or ones written by forks whose field numbers clash with BVLC's,
    use the streaming reader in surgery.io.caffemodel instead.
    """
    import os

    from .errors import SurgeryError

    suffix = _suffix(path)
    if suffix in _TEXT_SUFFIXES:
        from .io.netfile import load_prototxt

        return load_prototxt(path, upgrade=upgrade)
    if suffix in _BINARY_TYPES:
        from google.protobuf.message import DecodeError

        from . import caffe_pb2
        from .io.inputs import read_input

        path = os.fspath(path)
        data = read_input(path, suffix.lstrip("."))
        message = getattr(caffe_pb2, _BINARY_TYPES[suffix])()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise SurgeryError(f"not a valid {suffix} file ({exc})", file=path) from None
        if upgrade and suffix == ".caffemodel":
            from .io.upgrade import upgrade_net

            try:
                message, _notes = upgrade_net(message)
            except SurgeryError as exc:
                exc.file = exc.file or path
                raise
        return message
    raise SurgeryError(
        "unknown file type; expected .prototxt (text) or .caffemodel/.binaryproto (binary)",
        file=os.fspath(path),
    )


def save(obj, path, *, inputs=(), in_place=False):
    """Save a message by extension (text for .prototxt, binary otherwise), atomically."""
    import os

    from .errors import SurgeryError
    from .io.atomic import write_atomic

    suffix = _suffix(path)
    if suffix in _TEXT_SUFFIXES:
        from .io.prototxt import save_prototxt

        return save_prototxt(obj, path, inputs=inputs, in_place=in_place)
    if suffix in _BINARY_TYPES:
        expected = _BINARY_TYPES[suffix]
        if type(obj).__name__ != expected:
            raise SurgeryError(f"a {suffix} file holds a {expected}, not a {type(obj).__name__}",
                               file=os.fspath(path))
        return write_atomic(os.fspath(path), obj.SerializeToString(), inputs=inputs,
                            in_place=in_place)
    raise SurgeryError(
        "unknown file type; expected .prototxt (text) or .caffemodel/.binaryproto (binary)",
        file=os.fspath(path),
    )


def analyse(net, **options):
    """Shapes, strides, receptive fields and costs of a net: `surgery.analysis.analyse.analyse`."""
    from .analysis.analyse import analyse as run

    return run(net, **options)


def inspect(net, **options):
    """Shapes, strides, receptive fields and costs of the net at `net`, and the output
    strides `dilate` reaches -> api.inspect.Inspected (`.analysis`, `.reachable`).
    Options (input_shapes, phase, ...): `surgery.api.inspect.inspect`."""
    from .api.inspect import inspect as run

    return run(net, **options)


def dilate(nets, *, output_stride, **options):
    """The net at `nets` (or several paths, converted together) at `output_stride`, by the
    exact a-trous rewrite -> api.dilate.Dilated (`.net`, `.report`: changes, grids,
    exactness; `.ok`). Written to `output=` when given. Options (head, pooling, weights,
    ...): `surgery.api.dilate.dilate`."""
    from .api.dilate import dilate as run

    return run(nets, output_stride=output_stride, **options)


def upgrade(path, **options):
    """A legacy net or solver file in the current format -> api.upgrade.Upgraded
    (`.text`: the upgraded file, `.changes`). Options: `surgery.api.upgrade.upgrade`."""
    from .api.upgrade import upgrade as run

    return run(path, **options)


def weights(model):
    """The layers and blob shapes of the .caffemodel at `model`, read without decoding a
    weight -> api.weights.Listed (`.layers`, `.params`)."""
    from .api.weights import weights as run

    return run(model)


def check(net, model, **options):
    """Whether the .caffemodel at `model` loads into the net at `net`, as Caffe would
    check it -> api.check.Checked (`.ok`, `.report`: a row per layer). Options:
    `surgery.api.check.check`."""
    from .api.check import check as run

    return run(net, model, **options)


def init_weights(net, output, **options):
    """Random weights for the net at `net` that keep activations O(1), streamed to the
    .caffemodel `output` -> api.init_weights.Initialised (`.layers`). Options (seed,
    input_shapes, phase): `surgery.api.init_weights.init_weights`."""
    from .api.init_weights import init_weights as run

    return run(net, output, **options)


def verify(original, converted, weights, **options):
    """Run both nets on one random input in a real engine and compare them on their
    common grid -> api.verify.Verified (`.ok`: PASS, `.report.blobs`). Options (engine,
    tol, blobs, weights_converted, ...): `surgery.api.verify.verify`."""
    from .api.verify import verify as run

    return run(original, converted, weights, **options)


def fcn(net, **options):
    """The net at `net` with its InnerProduct layers made convolutions ->
    api.fcn.Convolutionalized (`.net`, `.plan`). Options (weights, weights_out, pad,
    decimate, output, ...): `surgery.api.fcn.fcn`."""
    from .api.fcn import fcn as run

    return run(net, **options)


def report(net, converted=None, **options):
    """One self-contained HTML page of a net or of a conversion -> api.report.Page
    (`.html`). Options (output, verify, ...): `surgery.api.report.report`."""
    from .api.report import report as run

    return run(net, converted, **options)


def segment(net, *, head, classes, **options):
    """A trainable segmentation net (DeepLab v2/v3/v3+, PSPNet, LargeFOV head) on the
    backbone at `net` -> api.segment.Segmented (`.train`, `.deploy_net`). Options
    (output, deploy, solver, weights_out, ...): `surgery.api.segment.segment`."""
    from .api.segment import segment as run

    return run(net, head=head, classes=classes, **options)


def fold(net, weights, **options):
    """BatchNorm (and the Scale after it) folded into the layer before it ->
    api.fold.FoldResult (`.net`, `.folded`: folds, what was left and why). Options
    (weights_out, output, ...): `surgery.api.fold.fold`."""
    from .api.fold import fold as run

    return run(net, weights, **options)


def bvlc(net, **options):
    """Fork layers rewritten to BVLC Caffe's own types wherever an exact form exists ->
    api.bvlc.BvlcRewritten (`.net`, `.result`: rewritten and kept layers). Options
    (weights, weights_out, output, ...): `surgery.api.bvlc.bvlc`."""
    from .api.bvlc import bvlc as run

    return run(net, **options)


__all__ = ["__version__", "load", "save", "analyse", "inspect", "dilate", "upgrade", "weights",
           "check", "init_weights", "verify", "fcn", "report", "segment", "fold", "bvlc"]
