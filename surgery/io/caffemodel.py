"""Wire-level `.caffemodel` reading and writing.

A caffemodel is one binary NetParameter message. Real ones reach several GiB
(beyond protobuf's 2 GiB message limit) and hold single layers of hundreds of
MB, so nothing here parses the file with protobuf. The reader walks the wire
format with seeks, remembers byte ranges and never loads float data; the
writer streams verbatim byte ranges from the source and encodes only the
layers it creates or edits. Layer parameters are never decoded: forks reuse
field numbers (143-148...) with different meanings, and weights only need
name, type, bottom, top and blobs.

numpy is imported by the functions that touch values (reading or writing a blob's
data), not by the module: reading a file's summary (`weights`, `check`) never needs it,
and it is most of the time such a command takes.
"""

import math
import os
from typing import NamedTuple, Optional

from ..errors import SurgeryError
from .atomic import write_atomic
from .inputs import open_input
from .v1types import V1_TYPE_BY_NUMBER

# Largest single read() the reader issues; float data is skipped, never read.
MAX_READ = 1 << 20
# Strings (names, types) longer than this are treated as corruption.
MAX_STRING = 1 << 16
# Caffe caps blobs at 32 axes; a longer shape is corruption.
MAX_AXES = 32
# Nested groups deeper than this are corruption (protobuf's own limit is 100).
MAX_DEPTH = 64
COPY_CHUNK = 1 << 20

# Wire types.
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

# NetParameter fields.
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100
# LayerParameter fields.
L_NAME, L_TYPE, L_BOTTOM, L_TOP, L_BLOBS = 1, 2, 3, 4, 7
# V1LayerParameter fields.
V1_BOTTOM, V1_TOP, V1_NAME, V1_TYPE, V1_BLOBS = 2, 3, 4, 5, 6
# BlobProto fields.
B_NUM, B_CHANNELS, B_HEIGHT, B_WIDTH = 1, 2, 3, 4
B_DATA, B_DIFF, B_SHAPE, B_DOUBLE_DATA, B_DOUBLE_DIFF = 5, 6, 7, 8, 9
# BlobShape fields.
S_DIM = 1

# Type string -> V1LayerParameter.LayerType value, for the writer (table: io/v1types.py).
V1_TYPE_ENUMS = {name: num for num, name in V1_TYPE_BY_NUMBER.items() if name}


def v1_type_name(value):
    """V2 type string for a V1 enum value; unknown (fork) values stay visible as V1:<n>."""
    return V1_TYPE_BY_NUMBER.get(value, f"V1:{value}")


# --------------------------------------------------------------------------- summary


class Run(NamedTuple):
    """`count` values of `itemsize` bytes, the first at `offset`, one every `stride` bytes.

    Packed data is one run with stride == itemsize; unpacked repeated values
    (legal protobuf, never written by Caffe) have a tag byte between them.
    """

    offset: int
    count: int
    stride: int
    itemsize: int


class BlobInfo(NamedTuple):
    index: int
    shape: tuple            # what Caffe's FromProto would reshape to
    legacy: bool            # shape came from num/channels/height/width
    legacy_dims: Optional[tuple]  # (num, channels, height, width), None when absent
    shape_dims: Optional[tuple]   # dims of the `shape` field, None when absent
    count: int              # number of data values (float or double)
    dtype: Optional[str]    # "float", "double" or None when there is no data
    data_offset: Optional[int]  # first data byte, None when there is no data
    diff_count: int
    start: int              # byte range of the whole blobs field, tag included
    end: int
    runs: tuple = ()
    content_start: int = 0  # first byte after the field's tag and length

    @property
    def size(self):
        """Element count of `shape` (1 for a 0-d shape)."""
        return math.prod(self.shape) if self.shape else 1


class LayerInfo(NamedTuple):
    index: int
    name: str
    type: str
    field: str              # "layer" (LayerParameter) or "layers" (V1LayerParameter)
    start: int              # byte range of the whole top-level field, tag included
    end: int
    content_start: int      # first byte after the tag and length
    bottoms: list
    tops: list
    blobs: list
    type_enum: Optional[int] = None  # the V1 enum value, for V1 layers
    name_ranges: tuple = ()  # byte ranges of the name field(s), tag included

    @property
    def params(self):
        return sum(b.count for b in self.blobs)


class Summary:
    """What `read_caffemodel` found: the file's `path` and `size`, the net's `name`, its
    `layers` (LayerInfo, in file order) and `items`, every top-level field as
    (field_number, start, end), in file order. (A plain class, as the records above are
    named tuples: dataclasses would cost every command that reads weights its import.)"""

    def __init__(self, path, size, name, layers, items):
        self.path, self.size, self.name, self.layers, self.items = path, size, name, layers, items
        self._by_name = None

    def __repr__(self):
        return f"Summary(path={self.path!r}, size={self.size}, {len(self.layers)} layers)"

    def find(self, name):
        """The first layer called `name` (Caffe matches by name), or None."""
        if self._by_name is None:       # built once: the layers are read once
            self._by_name = {}
            for layer in self.layers:
                self._by_name.setdefault(layer.name, layer)
        return self._by_name.get(name)

    def layer(self, name):
        found = self.find(name)
        if found is None:
            raise SurgeryError(f"no layer of this name in {self.path}", layer=name)
        return found

    @property
    def params(self):
        return sum(layer.params for layer in self.layers)

    @property
    def legacy(self):
        """True when the layers use the V1 `layers` field."""
        return any(layer.field == "layers" for layer in self.layers)


# --------------------------------------------------------------------------- wire reader


class _Wire:
    """Bounded, position-tracking reads; every failure names the file and offset."""

    def __init__(self, fileobj, label, size):
        self.f = fileobj
        self.label = label
        self.size = size
        self.pos = 0
        self.f.seek(0)

    def fail(self, message, at=None):
        at = self.pos if at is None else at
        raise SurgeryError(f"byte {at}: {message}; the caffemodel is damaged or not a caffemodel",
                           file=self.label)

    def seek(self, pos):
        self.pos = pos
        self.f.seek(pos)

    def read(self, n, end):
        if self.pos + n > end:
            self.fail(f"{n}-byte value runs past the end of its message (byte {end})")
        out = b""
        while len(out) < n:
            chunk = self.f.read(min(n - len(out), MAX_READ))
            if not chunk:
                self.fail("file ends early (truncated?)", at=self.pos + len(out))
            out += chunk
        self.pos += n
        return out

    def skip(self, n, end):
        if n < 0 or self.pos + n > end:
            self.fail(f"{n}-byte field runs past the end of its message (byte {end})")
        self.seek(self.pos + n)

    def varint(self, end):
        start = self.pos
        value = shift = 0
        for _ in range(10):
            if self.pos >= end:
                self.fail("varint runs past the end of its message", at=start)
            b = self.f.read(1)
            if not b:
                self.fail("file ends inside a varint (truncated?)", at=start)
            self.pos += 1
            value |= (b[0] & 0x7F) << shift
            if b[0] < 0x80:
                return value & 0xFFFFFFFFFFFFFFFF
            shift += 7
        self.fail("varint longer than 10 bytes", at=start)

    def key(self, end):
        at = self.pos
        k = self.varint(end)
        number, wire = k >> 3, k & 7
        if number == 0 or number > 0x1FFFFFFF:
            self.fail(f"invalid field number {number}", at=at)
        if wire in (6, 7):
            self.fail(f"invalid wire type {wire} for field {number}", at=at)
        if wire == EGROUP:
            self.fail(f"end-group marker for field {number} without a start", at=at)
        return number, wire, at

    def length(self, end):
        at = self.pos
        n = self.varint(end)
        if self.pos + n > end:
            self.fail(f"length {n} runs past the end of its message (byte {end})", at=at)
        return n

    def skip_value(self, number, wire, end):
        if wire == VARINT:
            self.varint(end)
        elif wire == I64:
            self.skip(8, end)
        elif wire == I32:
            self.skip(4, end)
        elif wire == LEN:
            self.skip(self.length(end), end)
        else:  # SGROUP: skip to the matching end-group, iteratively
            stack = [number]
            while stack:
                if len(stack) > MAX_DEPTH:
                    self.fail(f"groups nested more than {MAX_DEPTH} deep")
                at = self.pos
                k = self.varint(end)
                n, w = k >> 3, k & 7
                if n == 0 or w in (6, 7):
                    self.fail(f"invalid field key {k}", at=at)
                if w == EGROUP:
                    if n != stack[-1]:
                        self.fail(f"end-group {n} does not close group {stack[-1]}", at=at)
                    stack.pop()
                elif w == SGROUP:
                    stack.append(n)
                else:
                    self.skip_value(n, w, end)

    def string(self, end, what):
        n = self.length(end)
        if n > MAX_STRING:
            self.fail(f"{what} is {n} bytes long")
        return self.read(n, end).decode("utf-8", errors="replace")

    def expect(self, number, wire, wanted, what, at):
        if wire != wanted:
            self.fail(f"field {number} ({what}) has wire type {wire}, expected {wanted}", at=at)


def _signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _unpacked_run(w, end, offset, tag, itemsize):
    """Extend an unpacked repeated value at `offset` over the identical records after it.

    Returns the run; the reader is left after its last value. Reads in chunks,
    so even a huge unpacked array costs bounded memory and few Python steps.
    """
    import numpy as np

    stride = itemsize + 1
    count = 1
    w.seek(offset + itemsize)
    while True:
        room = (end - w.pos) // stride
        if room <= 0:
            break
        n = min(room, MAX_READ // stride)
        raw = np.frombuffer(w.read(n * stride, end), dtype=np.uint8).reshape(n, stride)
        bad = np.flatnonzero(raw[:, 0] != tag)
        good = int(bad[0]) if bad.size else n
        count += good
        if good < n:
            w.seek(offset + itemsize + (count - 1) * stride)
            break
    w.seek(offset + itemsize + (count - 1) * stride)
    return Run(offset, count, stride, itemsize)


def _read_shape(w, end, dims):
    while w.pos < end:
        number, wire, at = w.key(end)
        if number == S_DIM and wire == LEN:
            n = w.length(end)
            if n > MAX_AXES * 10:
                w.fail(f"blob shape of {n} bytes (more than {MAX_AXES} axes)", at=at)
            stop = w.pos + n
            while w.pos < stop:
                dims.append(_signed(w.varint(stop), 64))
        elif number == S_DIM and wire == VARINT:
            dims.append(_signed(w.varint(end), 64))
        elif number == S_DIM:
            w.expect(number, wire, LEN, "shape.dim", at)
        else:
            w.skip_value(number, wire, end)
        if len(dims) > MAX_AXES:
            w.fail(f"blob shape has more than {MAX_AXES} axes", at=at)


def _read_blob(w, end, index, start):
    content_start = w.pos
    legacy = {}
    dims = None
    float_runs, double_runs = [], []
    diff_count = 0
    while w.pos < end:
        number, wire, at = w.key(end)
        if number in (B_NUM, B_CHANNELS, B_HEIGHT, B_WIDTH):
            w.expect(number, wire, VARINT, "legacy blob dimension", at)
            legacy[number] = _signed(w.varint(end), 32)
        elif number in (B_DATA, B_DOUBLE_DATA, B_DIFF, B_DOUBLE_DIFF):
            itemsize = 4 if number in (B_DATA, B_DIFF) else 8
            scalar = I32 if itemsize == 4 else I64
            if wire == LEN:
                n = w.length(end)
                if n % itemsize:
                    w.fail(f"packed field {number} has {n} bytes, not a multiple of {itemsize}", at=at)
                run = Run(w.pos, n // itemsize, itemsize, itemsize)
                w.skip(n, end)
            elif wire == scalar:
                run = _unpacked_run(w, end, w.pos, (number << 3) | wire, itemsize)
            else:
                w.fail(f"field {number} (blob values) has wire type {wire}", at=at)
            if number == B_DATA:
                float_runs.append(run)
            elif number == B_DOUBLE_DATA:
                double_runs.append(run)
            else:
                diff_count += run.count
        elif number == B_SHAPE:
            w.expect(number, wire, LEN, "blob shape", at)
            n = w.length(end)
            dims = [] if dims is None else dims  # repeated messages merge
            _read_shape(w, w.pos + n, dims)
        else:
            w.skip_value(number, wire, end)
    # Caffe prefers double data when there is any, and legacy dims when any is set.
    runs = double_runs if sum(r.count for r in double_runs) else float_runs
    count = sum(r.count for r in runs)
    dtype = None if not count else ("double" if runs is double_runs else "float")
    legacy_dims = None
    if legacy:
        legacy_dims = tuple(legacy.get(k, 0) for k in (B_NUM, B_CHANNELS, B_HEIGHT, B_WIDTH))
    shape = legacy_dims if legacy_dims is not None else tuple(dims or ())
    first = next((r.offset for r in runs if r.count), None)
    return BlobInfo(index=index, shape=shape, legacy=legacy_dims is not None,
                    legacy_dims=legacy_dims, shape_dims=None if dims is None else tuple(dims),
                    count=count, dtype=dtype, data_offset=first, diff_count=diff_count,
                    start=start, end=end, runs=tuple(r for r in runs if r.count),
                    content_start=content_start)


def _read_layer(w, end, index, start, v1):
    fields = ((V1_NAME, V1_TYPE, V1_BOTTOM, V1_TOP, V1_BLOBS) if v1
              else (L_NAME, L_TYPE, L_BOTTOM, L_TOP, L_BLOBS))
    f_name, f_type, f_bottom, f_top, f_blobs = fields
    content_start = w.pos
    name, type_, type_enum = "", "", None
    bottoms, tops, blobs, name_ranges = [], [], [], []
    while w.pos < end:
        number, wire, at = w.key(end)
        if number == f_name:
            w.expect(number, wire, LEN, "layer name", at)
            name = w.string(end, "layer name")
            name_ranges.append((at, w.pos))
        elif number == f_type and v1:
            w.expect(number, wire, VARINT, "V1 layer type", at)
            type_enum = _signed(w.varint(end), 32)
            type_ = v1_type_name(type_enum)
        elif number == f_type:
            w.expect(number, wire, LEN, "layer type", at)
            type_ = w.string(end, "layer type")
        elif number in (f_bottom, f_top):
            w.expect(number, wire, LEN, "bottom/top", at)
            (bottoms if number == f_bottom else tops).append(w.string(end, "blob name"))
        elif number == f_blobs:
            w.expect(number, wire, LEN, "blobs", at)
            n = w.length(end)
            stop = w.pos + n
            blobs.append(_read_blob(w, stop, len(blobs), at))
        else:
            w.skip_value(number, wire, end)
    return LayerInfo(index, name, type_, "layers" if v1 else "layer", start, end, content_start,
                     bottoms, tops, blobs, type_enum, tuple(name_ranges))


def _open(source):
    """(fileobj, label, size, owned) for a path or an open seekable binary file."""
    if hasattr(source, "read"):
        label = getattr(source, "name", "<caffemodel>")
        here = source.seek(0, os.SEEK_END)
        source.seek(0)
        return source, str(label), here, False
    path = os.fspath(source)
    f = open_input(path, "caffemodel")
    size = os.fstat(f.fileno()).st_size
    return f, path, size, True


def read_caffemodel(source) -> Summary:
    """Summarise a caffemodel (path or seekable binary file) without loading its data."""
    f, label, size, owned = _open(source)
    try:
        if size == 0:   # a valid empty message, but in practice a failed download or copy
            raise SurgeryError("the file is empty (0 bytes), so it holds no weights",
                               file=label)
        w = _Wire(f, label, size)
        name = None
        layers, items = [], []
        while w.pos < size:
            number, wire, at = w.key(size)
            if number in (NET_LAYER, NET_LAYERS_V1):
                w.expect(number, wire, LEN, "layer" if number == NET_LAYER else "layers", at)
                n = w.length(size)
                layers.append(_read_layer(w, w.pos + n, len(layers), at, number == NET_LAYERS_V1))
            elif number == NET_NAME:
                w.expect(number, wire, LEN, "net name", at)
                name = w.string(size, "net name")
            else:
                w.skip_value(number, wire, size)
            items.append((number, at, w.pos))
        return Summary(path=label, size=size, name=name, layers=layers, items=items)
    except OSError as exc:
        raise SurgeryError(f"cannot read caffemodel: {exc}", file=label) from None
    finally:
        if owned:
            f.close()


def read_blob(source, layer, index=0, *, file=None):
    """One blob's values as float32/float64, shaped like Caffe would; reads only that blob.

    `source` is a path or a Summary (which remembers its path); `layer` a name or LayerInfo.
    `file`: that caffemodel already open (binary), for a caller reading many small blobs
    (fold reads five per BatchNorm group), which then need not open it for each.
    """
    import contextlib

    import numpy as np

    summary = source if isinstance(source, Summary) else read_caffemodel(source)
    info = layer if isinstance(layer, LayerInfo) else summary.layer(layer)
    if not 0 <= index < len(info.blobs):
        raise SurgeryError(f"has {len(info.blobs)} blobs, no blob {index}", layer=info.name)
    blob = info.blobs[index]
    if blob.count != blob.size:
        raise SurgeryError(f"blob {index} holds {blob.count} values but its shape "
                           f"{list(blob.shape)} needs {blob.size}", file=summary.path, layer=info.name)
    dtype = np.dtype("<f8" if blob.dtype == "double" else "<f4")
    parts = []
    try:
        with contextlib.nullcontext(file) if file is not None else open(summary.path, "rb") as f:
            for run in blob.runs:
                f.seek(run.offset)
                if run.stride == run.itemsize:
                    part = np.frombuffer(f.read(run.count * run.itemsize), dtype=dtype)
                else:
                    nbytes = run.count * run.stride - (run.stride - run.itemsize)
                    raw = np.fromfile(f, dtype=np.uint8, count=nbytes)
                    if raw.size == nbytes:
                        raw = np.concatenate([raw, np.zeros(run.stride - run.itemsize, np.uint8)])
                        part = raw.reshape(run.count, run.stride)[:, :run.itemsize].copy().view(dtype)
                        part = part.reshape(-1)
                    else:
                        part = np.zeros(0, dtype)
                if part.size != run.count:
                    raise SurgeryError(f"blob {index} data ends early (file changed or truncated)",
                                       file=summary.path, layer=info.name)
                parts.append(part)
    except OSError as exc:
        raise SurgeryError(f"cannot read blob {index}: {exc}", file=summary.path,
                           layer=info.name) from None
    values = np.concatenate(parts) if parts else np.zeros(0, dtype)
    native = np.float64 if blob.dtype == "double" else np.float32
    return values.astype(native, copy=False).reshape(blob.shape)


class BlobReader:
    """Ranges of one blob's values, read on demand from an open file; nothing else is read.

    `with BlobReader(summary, layer, index) as r: r.read(start, count)` gives values
    start..start+count-1 of the flat blob as float32 (float64 for double data).
    `raw_pieces()` yields the data bytes themselves when they are one packed run each,
    for copying a blob whose values do not change (a reshape changes only the shape).
    """

    def __init__(self, summary, layer, index=0):
        import numpy as np

        info = layer if isinstance(layer, LayerInfo) else summary.layer(layer)
        if not 0 <= index < len(info.blobs):
            raise SurgeryError(f"has {len(info.blobs)} blobs, no blob {index}", layer=info.name)
        blob = info.blobs[index]
        if blob.count != blob.size:
            raise SurgeryError(f"blob {index} holds {blob.count} values but its shape "
                               f"{list(blob.shape)} needs {blob.size}", file=summary.path,
                               layer=info.name)
        self.path, self.layer, self.index, self.blob = summary.path, info.name, index, blob
        self.double = blob.dtype == "double"
        self.dtype = np.dtype("<f8" if self.double else "<f4")
        self.native = np.float64 if self.double else np.float32
        self.packed = all(run.stride == run.itemsize for run in blob.runs)
        self._starts = np.cumsum([0] + [run.count for run in blob.runs])
        self._file = None

    def __enter__(self):
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise SurgeryError(f"cannot read blob {self.index}: {exc.strerror}", file=self.path,
                               layer=self.layer) from None
        return self

    def __exit__(self, *exc):
        self._file.close()
        self._file = None

    def _fail(self):
        raise SurgeryError(f"blob {self.index} data ends early (file changed or truncated)",
                           file=self.path, layer=self.layer)

    def read(self, start, count, out=None):
        """Values start..start+count-1; into `out` (a flat array of at least `count`
        values of this blob's dtype) when given, so a caller streaming a large blob can
        reuse one buffer instead of faulting in fresh pages for every piece."""
        import numpy as np

        out = np.empty(count, self.native) if out is None else out[:count]
        done = 0
        run_index = int(np.searchsorted(self._starts, start, side="right")) - 1
        f = self._file
        while done < count:
            run = self.blob.runs[run_index]
            first = start + done - int(self._starts[run_index])
            n = min(count - done, run.count - first)
            f.seek(run.offset + first * run.stride)
            if run.stride == run.itemsize:   # straight into place, no second copy
                target = out[done:done + n]
                if self.dtype != target.dtype:   # big-endian host
                    target = np.empty(n, self.dtype)
                if f.readinto(memoryview(target).cast("B")) != n * run.itemsize:
                    self._fail()
                part = target
            else:
                nbytes = n * run.stride - (run.stride - run.itemsize)
                raw = np.frombuffer(f.read(nbytes) + bytes(run.stride - run.itemsize), np.uint8)
                if raw.size != n * run.stride:
                    self._fail()
                part = raw.reshape(n, run.stride)[:, :run.itemsize].copy().view(self.dtype)
            if part.size != n:
                self._fail()
            if part is not out[done:done + n] and not np.shares_memory(part, out):
                out[done:done + n] = part.reshape(-1)
            done += n
            run_index += 1
        return out

    def raw_pieces(self):
        """The packed data bytes, COPY_CHUNK at a time (only when `packed`)."""
        for run in self.blob.runs:
            self._file.seek(run.offset)
            left = run.count * run.itemsize
            while left > 0:
                piece = self._file.read(min(left, COPY_CHUNK))
                if not piece:
                    self._fail()
                left -= len(piece)
                yield piece


# --------------------------------------------------------------------------- writer


def _varint(value):
    value &= 0xFFFFFFFFFFFFFFFF  # negative ints go out as 10-byte two's complement
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number, wire):
    return _varint((number << 3) | wire)


def _len_header(number, length):
    return _key(number, LEN) + _varint(length)


def _string_field(number, text):
    raw = text.encode("utf-8")
    return _len_header(number, len(raw)) + raw


class BlobSpec(NamedTuple):
    """A blob to write. float64 arrays go to double_data, others to float data.

    `legacy=True` writes num/channels/height/width (shape padded with leading 1s,
    as old Caffe did) instead of the `shape` field.
    """

    array: object           # a numpy array, or what np.asarray takes
    legacy: bool = False


class StreamBlob(NamedTuple):
    """A blob whose values are produced while it is written, so it is never whole in memory.

    `shape` fixes the field lengths up front (a packed field's length follows from it);
    `pieces` is an iterable of arrays (or bytes) that, in C order, give exactly the blob's
    values as little-endian float32 (float64 with `double=True`). It is consumed once.
    """

    shape: tuple
    pieces: object
    double: bool = False
    legacy: bool = False

    @property
    def nbytes(self):
        return math.prod(self.shape) * (8 if self.double else 4)


class RawBlob(NamedTuple):
    """A blob of the source file, copied byte for byte. `field` is the blobs field number
    it is written under (7 in a `layer`, 6 in a V1 `layers` entry); when it differs from the
    one the blob had, only the tag is new."""

    blob: BlobInfo
    field: int


class _RawEncoded:
    """A RawBlob with its length known up front, written from the open source file."""

    def __init__(self, raw, field_number):
        blob = raw.blob
        self.start, self.body, self.end = blob.start, blob.content_start, blob.end
        self.header = None if field_number == raw.field else \
            _len_header(field_number, self.end - self.body)
        self.total = (self.end - self.start if self.header is None
                      else len(self.header) + self.end - self.body)

    def write(self, out, src):
        if self.header is None:
            _copy(src, out, self.start, self.end)
        else:
            out.write(self.header)
            _copy(src, out, self.body, self.end)


def _encoded(blob, field_number):
    if isinstance(blob, RawBlob):
        return _RawEncoded(blob, field_number)
    return _EncodedBlob(_as_spec(blob), field_number)


def _as_spec(blob):
    if isinstance(blob, StreamBlob):
        if blob.legacy and len(blob.shape) > 4:
            raise SurgeryError(f"a legacy 4-D blob cannot hold shape {list(blob.shape)}")
        return blob
    import numpy as np

    spec = blob if isinstance(blob, BlobSpec) else BlobSpec(np.asarray(blob))
    arr = np.asarray(spec.array)
    dtype = "<f8" if arr.dtype == np.float64 else "<f4"
    arr = np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d arrays 0-d
    if spec.legacy and arr.ndim > 4:
        raise SurgeryError(f"a legacy 4-D blob cannot hold shape {list(arr.shape)}")
    return BlobSpec(arr, spec.legacy)


class _EncodedBlob:
    """One BlobProto as header bytes + array + trailer bytes, its length known up front.

    Fields go out in field-number order (legacy dims, data, shape, double_data),
    as protobuf itself serialises them.
    """

    def __init__(self, spec, field_number):
        if isinstance(spec, StreamBlob):
            dims, nbytes, double = tuple(spec.shape), spec.nbytes, spec.double
        else:
            arr = spec.array
            dims, nbytes, double = tuple(arr.shape), arr.nbytes, arr.dtype.itemsize == 8
        before, after = bytearray(), b""
        if spec.legacy:
            dims = (1,) * (4 - len(dims)) + dims
            for number, dim in zip((B_NUM, B_CHANNELS, B_HEIGHT, B_WIDTH), dims):
                before += _key(number, VARINT) + _varint(dim)
            shape = b""
        else:
            packed = b"".join(_varint(d) for d in dims)
            inner = (_len_header(S_DIM, len(packed)) + packed) if packed else b""
            shape = _len_header(B_SHAPE, len(inner)) + inner
        if not double:
            if nbytes:
                before += _len_header(B_DATA, nbytes)
            after = shape
        else:
            before += shape
            if nbytes:
                before += _len_header(B_DOUBLE_DATA, nbytes)
        self.spec, self.nbytes, self.double = spec, nbytes, double
        self.before, self.after = bytes(before), after
        body = len(self.before) + nbytes + len(self.after)
        self.header = _len_header(field_number, body)
        self.total = len(self.header) + body

    def write(self, out, src=None):
        out.write(self.header)
        out.write(self.before)
        if isinstance(self.spec, StreamBlob):
            _write_pieces(out, self.spec.pieces, self.nbytes, "<f8" if self.double else "<f4")
        else:
            _write_array(out, self.spec.array)
        out.write(self.after)


def _write_pieces(out, pieces, nbytes, dtype):
    """Write a streamed blob's pieces; they must add up to exactly `nbytes`, or the
    length already written in the header would be a lie."""
    done = 0
    for piece in pieces:
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            import numpy as np

            piece = np.ascontiguousarray(piece, dtype=dtype)
            piece = memoryview(piece.reshape(-1)).cast("B")
        done += len(piece)
        if done > nbytes:
            break
        out.write(piece)
    if done != nbytes:
        raise SurgeryError(f"internal error: a streamed blob gave {done} bytes, its header "
                           f"promised {nbytes}")


def _write_array(out, arr):
    view = memoryview(arr.reshape(-1)).cast("B")
    for i in range(0, len(view), COPY_CHUNK):
        out.write(view[i:i + COPY_CHUNK])


def _copy(src, out, start, end):
    src.seek(start)
    left = end - start
    while left > 0:
        chunk = src.read(min(left, COPY_CHUNK))
        if not chunk:
            raise SurgeryError(f"source ends at byte {end - left}, expected {end} (changed while copying?)",
                               file=getattr(src, "name", None))
        out.write(chunk)
        left -= len(chunk)


class Copy(NamedTuple):
    """Bytes [start, end) of the source file, copied verbatim."""

    start: int
    end: int


class NewLayer(NamedTuple):
    """A layer built from scratch. `legacy=True` writes a V1 `layers` entry (enum type)."""

    name: str
    type: str
    blobs: tuple = ()
    bottoms: tuple = ()
    tops: tuple = ()
    legacy: bool = False


class EditLayer(NamedTuple):
    """A source layer copied with a new name and/or new blobs; everything else verbatim."""

    layer: LayerInfo
    name: Optional[str] = None
    blobs: Optional[tuple] = None


def _new_layer_fields(entry):
    """(head bytes, encoded blobs, top-level field number) for a NewLayer."""
    if entry.legacy:
        enum = entry.type if isinstance(entry.type, int) else V1_TYPE_ENUMS.get(entry.type)
        if enum is None:
            raise SurgeryError(f"type '{entry.type}' has no V1 enum value; a V1 (`layers`) "
                               "caffemodel cannot hold it", layer=entry.name)
        head = b"".join(_string_field(V1_BOTTOM, b) for b in entry.bottoms)
        head += b"".join(_string_field(V1_TOP, t) for t in entry.tops)
        head += _string_field(V1_NAME, entry.name) + _key(V1_TYPE, VARINT) + _varint(enum)
        blobs = [_encoded(b, V1_BLOBS) for b in entry.blobs]
        return head, blobs, NET_LAYERS_V1
    head = _string_field(L_NAME, entry.name) + _string_field(L_TYPE, entry.type)
    head += b"".join(_string_field(L_BOTTOM, b) for b in entry.bottoms)
    head += b"".join(_string_field(L_TOP, t) for t in entry.tops)
    blobs = [_encoded(b, L_BLOBS) for b in entry.blobs]
    return head, blobs, NET_LAYER


def _write_new_layer(out, entry, src=None):
    head, blobs, number = _new_layer_fields(entry)
    out.write(_len_header(number, len(head) + sum(b.total for b in blobs)))
    out.write(head)
    for blob in blobs:
        blob.write(out, src)


def _write_edit(out, src, entry):
    layer = entry.layer
    v1 = layer.field == "layers"
    cuts = []   # (start, end, replacement writer or None), in file order
    if entry.name is not None:
        new_name = _string_field(V1_NAME if v1 else L_NAME, entry.name)
        ranges = list(layer.name_ranges) or [(layer.content_start, layer.content_start)]
        for i, (s, e) in enumerate(ranges):
            cuts.append((s, e, new_name if i == 0 else b""))
    if entry.blobs is not None:
        new_blobs = [_encoded(b, V1_BLOBS if v1 else L_BLOBS) for b in entry.blobs]
        ranges = [(b.start, b.end) for b in layer.blobs] or [(layer.end, layer.end)]
        for i, (s, e) in enumerate(ranges):
            cuts.append((s, e, new_blobs if i == 0 else b""))
    cuts.sort(key=lambda c: (c[0], c[1]))

    def size_of(rep):
        return len(rep) if isinstance(rep, bytes) else sum(b.total for b in rep)

    body = (layer.end - layer.content_start) - sum(e - s for s, e, _ in cuts)
    body += sum(size_of(rep) for _, _, rep in cuts)
    out.write(_len_header(NET_LAYERS_V1 if v1 else NET_LAYER, body))
    pos = layer.content_start
    for s, e, rep in cuts:
        _copy(src, out, pos, s)
        if isinstance(rep, bytes):
            out.write(rep)
        else:
            for blob in rep:
                blob.write(out, src)
        pos = e
    _copy(src, out, pos, layer.end)


def write_entries(path, entries, *, source=None, inputs=(), in_place=False, outputs=None):
    """Stream a caffemodel made of `entries` (Copy / NewLayer / EditLayer) to `path`, atomically
    (with `outputs`, an io.atomic.Outputs transaction, staged in it for its commit).

    Copy and EditLayer entries read from `source` (a path).
    """
    entries = list(entries)
    needs_source = any(isinstance(e, (Copy, EditLayer)) or
                       (isinstance(e, NewLayer) and any(isinstance(b, RawBlob) for b in e.blobs))
                       for e in entries)
    if needs_source and source is None:
        raise SurgeryError("copying layers needs the source caffemodel")

    def produce(out):
        src = open(source, "rb") if needs_source else None
        try:
            for entry in entries:
                if isinstance(entry, Copy):
                    _copy(src, out, entry.start, entry.end)
                elif isinstance(entry, NewLayer):
                    _write_new_layer(out, entry, src)
                elif isinstance(entry, EditLayer):
                    _write_edit(out, src, entry)
                else:
                    raise TypeError(f"not a caffemodel entry: {entry!r}")
        finally:
            if src is not None:
                src.close()

    inputs = tuple(inputs) + ((source,) if source is not None else ())
    write_atomic(path, produce, inputs=inputs, in_place=in_place, outputs=outputs)


def plan(summary, *, rename=None, replace=None, drop=(), add=()):
    """Entries that turn `summary`'s file into an edited copy.

    rename: {old: new}; replace: {layer: [arrays]}; drop: layer names;
    add: NewLayer objects (appended; written as V1 when the source is V1).
    Untouched layers and all other top-level fields are copied byte for byte.
    """
    rename, replace, drop = dict(rename or {}), dict(replace or {}), set(drop)
    known = {layer.name for layer in summary.layers}
    for name in list(rename) + list(replace) + sorted(drop):
        if name not in known:
            raise SurgeryError(f"no layer of this name in {summary.path}", layer=name)
    final = [rename.get(l.name, l.name) for l in summary.layers if l.name not in drop]
    final += [e.name for e in add]
    seen = set()
    for name in final:
        if name in seen:
            raise SurgeryError("two layers would share this name in the output", layer=name)
        seen.add(name)

    by_start = {layer.start: layer for layer in summary.layers}
    entries = []

    def copy(start, end):
        if entries and isinstance(entries[-1], Copy) and entries[-1].end == start:
            entries[-1] = Copy(entries[-1].start, end)
        else:
            entries.append(Copy(start, end))

    for _number, start, end in summary.items:
        layer = by_start.get(start)
        if layer is None:
            copy(start, end)
        elif layer.name in drop:
            continue
        elif layer.name in rename or layer.name in replace:
            blobs = replace.get(layer.name)
            entries.append(EditLayer(layer, name=rename.get(layer.name),
                                     blobs=None if blobs is None else tuple(blobs)))
        else:
            copy(start, end)
    legacy = summary.legacy
    for entry in add:
        entries.append(NewLayer(entry.name, entry.type, tuple(entry.blobs), tuple(entry.bottoms),
                                tuple(entry.tops), legacy=legacy or entry.legacy))
    return entries


def transform(src, dst, *, rename=None, replace=None, drop=(), add=(), in_place=False):
    """Read `src`, apply the edits (see `plan`), write `dst` atomically; returns the plan."""
    summary = read_caffemodel(src)
    entries = plan(summary, rename=rename, replace=replace, drop=drop, add=add)
    write_entries(dst, entries, source=src, in_place=in_place)
    return entries


def write_caffemodel(path, layers, *, name=None, legacy=False, inputs=(), outputs=None):
    """Write a caffemodel from layer dicts {name, type, blobs[, bottom, top]} or NewLayers,
    atomically (with `outputs`, staged in that transaction for its commit).

    `layers` may be a generator and blobs may be StreamBlobs; the file is then streamed."""
    def entry(spec):
        if isinstance(spec, NewLayer):
            return spec if not legacy else NewLayer(spec.name, spec.type, spec.blobs,
                                                     spec.bottoms, spec.tops, True)
        return NewLayer(name=spec["name"], type=spec.get("type", ""),
                        blobs=tuple(spec.get("blobs", ())),
                        bottoms=tuple(spec.get("bottom", spec.get("bottoms", ()))),
                        tops=tuple(spec.get("top", spec.get("tops", ()))), legacy=legacy)

    header = _string_field(NET_NAME, name) if name is not None else b""

    def produce(out):
        out.write(header)
        for spec in layers:   # may be a generator: each layer is made as it is written
            _write_new_layer(out, entry(spec))

    write_atomic(path, produce, inputs=inputs, outputs=outputs)
