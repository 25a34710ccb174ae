"""caffe-surgery: model surgery for Caffe networks.

These functions work on NetParameters in memory. Every command, run on files as the
command line runs it and returning data instead of printing, is a function of
`surgery.api` (docs/api.md). See README.md for the command line and DESIGN.md for how
the package is laid out.
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


def dilate(net, *, output_stride, **options):
    """(new_net, report) at a smaller output stride: `surgery.transform.dilate.dilate`."""
    from .transform.dilate import dilate as run

    return run(net, output_stride=output_stride, **options)


__all__ = ["__version__", "load", "save", "analyse", "dilate"]
