"""Benchmarks for caffe-surgery, each a ratio against a baseline measured in the same run.

    python benchmarks/run.py                  # 0.5 GB and 2.5 GB models, ResNet-152, ResNet-50,
                                              # init-weights and fcn on VGG-16 and a 2.5 GB net,
                                              # ResNet-152's report page
    python benchmarks/run.py --sizes 0.5,1    # other model sizes (GB, 10^9 bytes)
    python benchmarks/run.py --only scaling   # dilate on MSRA ResNets of 50 to 2,135 layers
    python benchmarks/run.py --big 4          # init-weights/fcn on a 4 GB net (0: skip it)
    python benchmarks/run.py --quick          # 50 MB model, verify at 224 only; a smoke test
    python benchmarks/run.py --json out.json  # also write the rows as JSON

Every measurement is a fresh process (cold interpreter, warm page cache, the checkout's
bytecode compiled first, as installing the package does), timed by wall clock (best of
--repeat runs, the one least disturbed by other load), with its own peak RSS from
wait4(). Rows marked in-process give the time a child measured around the read itself,
without start-up. dilate, its start-up and its baseline run in turn, round after round,
and its ratio is the median over rounds of the two times of one round (this machine's
speed drifts). Nothing here asserts: the targets are printed beside the results.
"""

import argparse
import compileall
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from measure import cli_argv, measure, measure_alternating, paired_ratio  # noqa: E402

PY = sys.executable
GROUPS = ("weights", "dilate", "scaling", "verify", "forks", "init-fcn", "report", "fold")
# Child scripts that also time the read itself, without interpreter start-up and imports.
DECODE = """
import json, sys, time
from google.protobuf.message import DecodeError
from surgery import caffe_pb2
start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    data = f.read()
net = caffe_pb2.NetParameter()
try:
    net.ParseFromString(data)
except DecodeError as exc:
    print(json.dumps({"seconds": time.perf_counter() - start}))
    sys.exit(f"DecodeError: {exc}")
print(json.dumps({"seconds": time.perf_counter() - start, "layers": len(net.layer) + len(net.layers)}))
"""
# Floors for init-weights and fcn: the least a process must do to produce the same bytes.
# Both fsync, as our atomic writer does before it renames the file into place.
DRAW = """
import os, sys
import numpy as np
path, count = sys.argv[1], int(sys.argv[2])
chunk = 4 << 20   # 16 MB of float32
rng = np.random.default_rng(0)
with open(path, "wb") as f:
    for start in range(0, count, chunk):
        f.write(rng.standard_normal(min(chunk, count - start), dtype=np.float32))
    f.flush()
    os.fsync(f.fileno())
"""
COPY = """
import os, shutil, sys
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 16 << 20)
    dst.flush()
    os.fsync(dst.fileno())
"""
# The baseline for dilate: what any tool must do to read a prototxt and write one back,
# protobuf's own text parser and printer over the same file.
PARSE_PRINT = """
import sys
from google.protobuf import text_format
from surgery import caffe_pb2
with open(sys.argv[1], encoding="utf-8") as f:
    net = text_format.Parse(f.read(), caffe_pb2.NetParameter())
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write(text_format.MessageToString(net))
"""
SUMMARY = """
import json, sys, time
from surgery.io.caffemodel import read_caffemodel
start = time.perf_counter()
summary = read_caffemodel(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "layers": len(summary.layers)}))
"""


def _inner_seconds(sample):
    """The time a child script reported for its read, or None."""
    try:
        return json.loads(sample.stdout.strip().splitlines()[-1])["seconds"]
    except (ValueError, KeyError, IndexError):
        return None


class Table:
    """Rows of (group, what, seconds, rss, ratio text, target text, verdict)."""

    def __init__(self):
        self.rows = []

    def add(self, group, what, sample=None, *, ratio=None, target="", ok=None, note="",
            seconds=None, rss_mb=None):
        row = {"group": group, "what": what, "ratio": ratio, "target": target, "ok": ok,
               "note": note}
        if sample is not None:
            row.update(seconds=sample.seconds, rss_mb=sample.rss_mb, returncode=sample.returncode)
        if seconds is not None:
            row.update(seconds=seconds, rss_mb=rss_mb)
        for key in ("seconds", "rss_mb"):
            if row.get(key) is not None:
                row[key] = round(row[key], 6 if key == "seconds" else 1)
        if not self.rows or self.rows[-1]["group"] != group:
            print(f"{group}:")
        self.rows.append(row)
        print(_format_row(row), flush=True)
        return row


NAME_WIDTH = 50
HEADER = f"{'benchmark':<{NAME_WIDTH}} {'time':>9} {'peak RSS':>9}  {'ratio':<26} target"


def _format_row(row):
    secs = "-" if "seconds" not in row else (f"{row['seconds']:.3f} s" if row["seconds"] >= 0.01
                                             else f"{row['seconds'] * 1000:.2f} ms")
    rss = f"{row['rss_mb']:.0f} MB" if row.get("rss_mb") is not None else "-"
    verdict = {True: "  [met]", False: "  [NOT met]", None: ""}[row["ok"]]
    text = f"  {row['what']:<{NAME_WIDTH - 2}} {secs:>9} {rss:>9}  " \
           f"{row['ratio'] or '':<26} {row['target']}{verdict}"
    if row["note"]:
        text += f"\n{'':<4}{row['note']}"
    return text


def bench_weights(table, sizes, workdir, repeat):
    cli = cli_argv()
    for gb in sizes:
        group = f"weights {gb:g} GB"
        path = Path(workdir) / f"vgg_like_{gb:g}.caffemodel"
        try:
            gen = measure([PY, str(HERE / "models.py"), str(path), str(int(gb * 1e9))])
            if gen.returncode:
                table.add(group, "generate (skipped: generator failed)", note=gen.stderr.strip())
                continue
            size = path.stat().st_size
            table.add(group, f"generate {size / 1e9:.2f} GB (our writer)", gen,
                      target="< 100 MB RSS", ok=gen.rss_mb < 100)
            floor = measure([PY, "-c", "import surgery.io.caffemodel"], repeat=max(repeat, 5))
            table.add(group, "floor: import surgery.io.caffemodel", floor)
            startup = measure(cli + ["weights", "--help"], repeat=max(repeat, 3))
            table.add(group, "CLI start-up: weights --help", startup,
                      ratio=f"{startup.seconds / floor.seconds:.2f}x floor")
            ours = measure(cli + ["weights", str(path), "--json"], repeat=repeat)
            layers = _layer_count(ours.stdout)
            table.add(group, f"caffe-surgery weights --json ({layers} layers)", ours,
                      ratio=f"{ours.seconds / floor.seconds:.2f}x floor",
                      target="close to floor, < 100 MB",
                      ok=ours.returncode == 0 and ours.rss_mb < 100
                      and ours.seconds < startup.seconds + 0.1,
                      note=f"reading adds {ours.seconds - startup.seconds:+.3f} s over the CLI "
                      f"start-up, {ours.seconds - floor.seconds:+.3f} s over the floor")
            full = measure([PY, "-c", DECODE, str(path)], repeat=1 if gb >= 1 else repeat)
            fails = full.returncode != 0
            reason = (full.stderr.strip().splitlines() or [f"exit {full.returncode}"])[-1]
            table.add(group, "ParseFromString: FAILS" if fails else "ParseFromString (full decode)",
                      full, ratio=f"ours {full.seconds / ours.seconds:.1f}x faster",
                      target=">= 20x faster", ok=full.seconds / ours.seconds >= 20,
                      note=reason[:100] if fails else "")
            inner = measure([PY, "-c", SUMMARY, str(path)], repeat=repeat)
            ours_in, full_in = _inner_seconds(inner), _inner_seconds(full)
            if ours_in and full_in:
                table.add(group, "in-process: read_caffemodel vs read+Parse", None,
                          seconds=ours_in, rss_mb=inner.rss_mb,
                          ratio=f"ours {full_in / ours_in:,.0f}x faster",
                          target=">= 20x faster", ok=full_in / ours_in >= 20,
                          note=f"read+ParseFromString {'failed after' if fails else 'took'} "
                          f"{full_in:.3f} s; no interpreter start-up or imports in either")
        finally:
            if path.exists():
                path.unlink()


def _layer_count(stdout):
    try:
        return len(json.loads(stdout)["layers"])
    except (ValueError, KeyError, TypeError):
        return "?"


def resnet152_prototxt(workdir):
    """models/resnet152/deploy.prototxt, else generated, else the corpus file; None if none."""
    committed = ROOT / "models" / "resnet152" / "deploy.prototxt"
    if committed.exists():
        return committed
    try:
        from surgery.io.prototxt import save_prototxt
        from surgery.models import build

        path = Path(workdir) / "resnet152.prototxt"
        save_prototxt(build("resnet152"), path)
        return path
    except ImportError:
        pass
    corpus = ROOT.parent / "shared" / "corpus" / "resnet_kaiming" / "ResNet-152-deploy.prototxt"
    return corpus if corpus.exists() else None


def bench_dilate(table, workdir, repeat):
    group = "dilate ResNet-152"
    net = resnet152_prototxt(workdir)
    if net is None:
        table.add(group, "skipped: no ResNet-152 prototxt found")
        return
    cli = cli_argv()
    floor = measure([PY, "-c", "import google.protobuf"], repeat=max(repeat, 5))
    table.add(group, "floor: import google.protobuf", floor)
    printed = Path(workdir) / "resnet152_printed.prototxt"
    out = Path(workdir) / "resnet152_os8.prototxt"
    # Start-up, baseline and dilate take turns, so a spell of load elsewhere on the machine
    # does not fall on one of them only; each keeps its fastest run.
    startup, base, run = measure_alternating(
        [cli + ["dilate", "--help"], [PY, "-c", PARSE_PRINT, str(net), str(printed)],
         cli + ["dilate", str(net), "--output-stride", "8", "--head", "cut", "-o", str(out)]],
        repeat=max(repeat, 9))
    table.add(group, "CLI start-up: dilate --help", startup,
              ratio=f"{startup.seconds / floor.seconds:.1f}x floor")
    table.add(group, "baseline: protobuf text_format parse + print", base, note=_failed(base))
    added = run.seconds - startup.seconds
    ratio = paired_ratio(run, base)
    table.add(group, "dilate -s 8 --head cut (cold)", run,
              ratio=f"{ratio:.2f}x parse+print (median of rounds)",
              target="<= 1.5x parse+print, analysis+rewrite < 0.5 s",
              ok=run.returncode == 0 and base.returncode == 0 and ratio <= 1.5 and added < 0.5,
              note=f"analysis + rewrite + write add {added:.3f} s over the CLI start-up; "
              f"{run.seconds / floor.seconds:.1f}x the protobuf import floor"
              + ("" if run.returncode == 0 else f"; FAILED: {run.stderr.strip()[:100]}"))


# MSRA ResNets of growing depth (3 x blocks + 2): the standard 50 and 152, then deeper
# ones that, as ResNet-101/152 do, grow stage 4 (resnet(blocks=)). The last one has 9,264
# layers.
SCALING = ((50, None), (152, None), (302, (3, 8, 86, 3)), (1001, (3, 8, 319, 3)),
           (2135, (3, 8, 697, 3)))
SCALING_QUICK = ((50, None), (302, (3, 8, 86, 3)))


def bench_scaling(table, workdir, repeat, depths=SCALING):
    """dilate -s 8 --head cut on ResNets of 50 to 2,135 layers against protobuf's parse +
    print of the same file: time (the median over rounds of the ratio within a round) and
    peak memory (the ratio of the two peaks). The targets apply at about 9k layers."""
    from surgery.io.prototxt import save_prototxt
    from surgery.models.resnet import resnet

    group = "scaling: dilate vs parse+print"
    cli = cli_argv()
    for depth, blocks in depths:
        net = Path(workdir) / f"resnet{depth}.prototxt"
        built = resnet(depth, blocks=blocks, name=f"ResNet-{depth}")
        save_prototxt(built, net)
        layers = len(built.layer)
        printed, out = Path(workdir) / "printed.prototxt", Path(workdir) / "os8.prototxt"
        base, run = measure_alternating(
            [[PY, "-c", PARSE_PRINT, str(net), str(printed)],
             cli + ["dilate", str(net), "-s", "8", "--head", "cut", "-o", str(out)]],
            repeat=max(repeat, 3))
        ratio, memory = paired_ratio(run, base), run.rss_mb / max(base.rss_mb, 1e-9)
        name = f"ResNet-{depth} ({layers:,} layers, {net.stat().st_size / 1e6:.2f} MB)"
        table.add(group, f"{name}: parse+print", base, note=_failed(base))
        deep = layers >= 5000
        table.add(group, f"{name}: dilate", run,
                  ratio=f"{ratio:.2f}x time, {memory:.2f}x memory",
                  target="<= 2x time, <= 3x memory" if deep else "",
                  ok=(run.returncode == 0 and base.returncode == 0 and ratio <= 2
                      and memory <= 3) if deep else None, note=_failed(run))
        for path in (net, printed, out):
            path.unlink(missing_ok=True)


def _param_count(prototxt):
    from surgery.analysis.analyse import analyse
    from surgery.io.netfile import load_net

    shapes = analyse(load_net(str(prototxt)).net).param_shapes
    return sum(math.prod(s) for blobs in shapes.values() for s in blobs or ())


def _largest_blob_mb(caffemodel):
    from surgery.io.caffemodel import read_caffemodel

    summary = read_caffemodel(str(caffemodel))
    return max(b.count * (8 if b.dtype == "double" else 4)
               for layer in summary.layers for b in layer.blobs) / 2**20


def _failed(sample):
    return "" if sample.returncode == 0 else f"FAILED: {sample.stderr.strip()[-100:]}"


def bench_init_fcn(table, workdir, repeat, big_gb):
    """init-weights and fcn against their floors: drawing the same count of float32
    normals in 16 MB chunks and writing them; copying the weights file."""
    cli = cli_argv()
    nets = []
    vgg = ROOT / "models" / "vgg16" / "deploy.prototxt"
    if vgg.exists():
        nets.append(("VGG-16", vgg, repeat, [("fc6=3x3:1024", "fc7=:1024")]))
    else:
        table.add("init-weights VGG-16", "skipped: models/vgg16/deploy.prototxt not found")
    if big_gb > 0:
        from models import fc_chain_prototxt

        chain = Path(workdir) / "fc_chain.prototxt"
        fc_chain_prototxt(chain, big_gb * 1e9)
        nets.append(("fc chain", chain, 1, []))
    for label, net, runs, decimations in nets:
        weights = Path(workdir) / "init.caffemodel"
        floor_out = Path(workdir) / "floor.bin"
        try:
            count = _param_count(net)
            group = f"init-weights {label} ({count * 4 / 1e9:.2f} GB)"
            floor = measure([PY, "-c", DRAW, str(floor_out), str(count)], repeat=runs)
            floor_out.unlink(missing_ok=True)
            table.add(group, "floor: numpy draws and writes the normals", floor,
                      note=_failed(floor))
            ours = measure(cli + ["init-weights", str(net), "-o", str(weights)], repeat=runs)
            ratio = ours.seconds / floor.seconds
            table.add(group, "caffe-surgery init-weights", ours, ratio=f"{ratio:.2f}x floor",
                      target="< 100 MB, <= 1.5x floor",
                      ok=ours.returncode == 0 and ours.rss_mb < 100 and ratio <= 1.5,
                      note=_failed(ours))
            if ours.returncode:
                continue
            group = f"fcn {label}"
            floor = measure([PY, "-c", COPY, str(weights), str(floor_out)], repeat=runs)
            floor_out.unlink(missing_ok=True)
            table.add(group, "floor: copy the weights file", floor, note=_failed(floor))
            out = Path(workdir) / "fcn.caffemodel"
            run = measure(cli + ["fcn", str(net), "--weights", str(weights), "-o",
                                 str(Path(workdir) / "fcn.prototxt"), "--weights-out", str(out)],
                          repeat=runs)
            table.add(group, "caffe-surgery fcn --weights", run,
                      ratio=f"{run.seconds / floor.seconds:.2f}x floor", target="< 100 MB",
                      ok=run.returncode == 0 and run.rss_mb < 100, note=_failed(run))
            out.unlink(missing_ok=True)
            for spec in decimations:
                flags = [a for d in spec for a in ("--decimate", d)]
                run = measure(cli + ["fcn", str(net), "--weights", str(weights), "-o",
                                     str(Path(workdir) / "fcn.prototxt"), "--weights-out",
                                     str(out), *flags], repeat=runs)
                largest = _largest_blob_mb(out) if run.returncode == 0 else 0
                table.add(group, "fcn --weights --decimate " + ",".join(spec), run,
                          ratio=f"{run.seconds / floor.seconds:.2f}x floor",
                          target=f"< 100 MB + largest output blob ({largest:.0f} MB)",
                          ok=run.returncode == 0 and run.rss_mb < 100 + largest,
                          note=_failed(run))
                out.unlink(missing_ok=True)
        finally:
            for path in (weights, floor_out):
                path.unlink(missing_ok=True)


def _has_command(name):
    probe = measure(cli_argv() + [name, "--help"])
    return probe.returncode == 0


def caffe_build():
    """(python, pythonpath) of real Caffe: $CAFFE_PYTHON (and $CAFFE_PYTHONPATH), else the
    build tools/build_caffe.sh made; None when there is none."""
    if os.environ.get("CAFFE_PYTHON"):
        return os.environ["CAFFE_PYTHON"], os.environ.get("CAFFE_PYTHONPATH", "")
    cache = Path(os.environ.get("CAFFE_SURGERY_CACHE") or Path.home() / ".cache" / "caffe-surgery")
    env_file = cache / "caffe-99bd997" / "env"
    if not env_file.is_file():
        return None
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return (values["CAFFE_PYTHON"], values.get("CAFFE_PYTHONPATH", "")) \
        if "CAFFE_PYTHON" in values else None


VERIFY_SIZES = (224, 513)


def bench_verify(table, workdir, repeat, sizes=VERIFY_SIZES):
    """verify of ResNet-50 against its OS-8 conversion on each engine at 224 and 513 (513:
    the weights made at 224, so verify leaves the size-bound fc1000 out). Each engine's
    baseline is its interpreter importing it; the caffe rows also give the ratio to the
    opencv row of the same size. Peak RSS includes the pycaffe child process."""
    net = ROOT / "models" / "resnet50" / "deploy.prototxt"
    groups = [f"verify ResNet-50 @{size}" for size in sizes]
    if not net.exists():
        table.add(groups[0], "skipped: models/resnet50/deploy.prototxt not found")
        return
    missing = [c for c in ("init-weights", "verify") if not _has_command(c)]
    if missing:
        table.add(groups[0], f"skipped: command(s) {', '.join(missing)} not available yet")
        return
    cli = cli_argv()
    group = groups[0]
    floor = measure([PY, "-c", "import cv2, google.protobuf"], repeat=max(repeat, 3))
    table.add(group, "floor: import cv2, google.protobuf", floor)
    caffe = caffe_build()
    caffe_floor = None
    if caffe is not None:
        python, pythonpath = caffe
        os.environ["CAFFE_PYTHONPATH"] = pythonpath    # read by verify's pycaffe child
        os.environ.setdefault("GLOG_minloglevel", "2")
        caffe_floor = measure(["env", f"PYTHONPATH={pythonpath}", python, "-c", "import caffe"],
                              repeat=max(repeat, 3))
        table.add(group, f"floor: {python} -c 'import caffe'", caffe_floor,
                  note=_failed(caffe_floor))
    weights, converted = Path(workdir) / "r50.caffemodel", Path(workdir) / "r50_os8.prototxt"
    init = measure(cli + ["init-weights", str(net), "-o", str(weights)])
    table.add(group, "init-weights", init,
              note="" if init.returncode == 0 else f"FAILED: {init.stderr.strip()[:100]}")
    dil = measure(cli + ["dilate", str(net), "-s", "8", "--head", "cut", "-o", str(converted)])
    table.add(group, "dilate -s 8 --head cut", dil,
              note="" if dil.returncode == 0 else f"FAILED: {dil.stderr.strip()[:100]}")
    if init.returncode or dil.returncode:
        table.add(group, "verify skipped: a preparation step failed")
        return
    for size, group in zip(sizes, groups):
        argv = cli + ["verify", str(net), str(converted), "--weights", str(weights), "--json"]
        if size != 224:
            argv += ["--input-shape", f"data=1,3,{size},{size}"]
        ver = measure(argv + ["--engine", "opencv"], repeat=repeat)
        table.add(group, "verify (opencv, both nets)", ver,
                  ratio=f"{ver.seconds / floor.seconds:.1f}x floor", target="verdict PASS",
                  ok=ver.returncode == 0, note=f"verdict: {_verdict(ver)}")
        if caffe is None:
            table.add(group, "verify (caffe) skipped: no Caffe build (tools/build_caffe.sh)")
            continue
        run = measure(argv + ["--engine", "caffe", "--caffe-python", caffe[0]], repeat=repeat)
        table.add(group, "verify (caffe, both nets, one pycaffe child)", run,
                  ratio=f"{run.seconds / caffe_floor.seconds:.1f}x floor, "
                        f"{run.seconds / ver.seconds:.2f}x opencv",
                  target="verdict PASS", ok=run.returncode == 0,
                  note=f"verdict: {_verdict(run)}")


# The engines' own forward of two prepared nets, as verify runs them (engines/engine.py):
# the floor of verify's time. argv: JSON list of [prototxt, caffemodel, layer] and the
# input shape.
OPENCV_FORWARD = """
import json, sys
import cv2, numpy as np
runs, shape = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cv2.setNumThreads(2)
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
for proto, model, layer in runs:
    net = cv2.dnn.readNetFromCaffe(proto, model)
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    net.setInput(x, "data")
    net.forward(layer)
"""
CAFFE_FORWARD = """
import json, sys
import numpy as np
import caffe
caffe.set_mode_cpu()
runs, shape = json.loads(sys.argv[1]), json.loads(sys.argv[2])
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
for proto, model, layer in runs:
    net = caffe.Net(proto, caffe.TEST, weights=model)
    net.blobs["data"].data[...] = x
    net.forward()
"""


def _prepared_pair(workdir, tag, original, converted, weights, blobs, engine):
    """The two nets verify runs, prepared for `engine` as it prepares them, with their
    weights and the layer that last writes each compared blob: [(prototxt, caffemodel,
    layer)] for the engine's own forward (the baseline)."""
    from surgery.analysis.analyse import analyse
    from surgery.engines.prepare import prepare
    from surgery.io.caffemodel import read_caffemodel
    from surgery.io.netfile import load_net
    from surgery.io.prototxt import save_prototxt
    from surgery.transform.bvlc import form_weights
    from surgery.weights.writer import write

    summary = read_caffemodel(str(weights))
    runs = []
    for i, path in enumerate((original, converted)):
        prepared = prepare(analyse(load_net(path).net), engine)
        proto = Path(workdir) / f"{tag}-{engine}-{i}.prototxt"
        save_prototxt(prepared.net, proto)
        model = Path(workdir) / f"{tag}-{engine}-{i}.caffemodel"
        write(form_weights(prepared.forms, summary, retype=False), model, source=summary)
        writers = {top: layer.name for layer in prepared.net.layer for top in layer.top}
        runs.append([str(proto), str(model), writers[blobs[-1]]])
    return runs


def bench_forks(table, workdir, repeat, size=473):
    """verify on PSPNet-50 (its published 473 px, full width, fork BN and Interp) against
    its OS-16 and OS-4 conversions: time and peak memory, and the ratio to the engine's own
    forward of the same two prepared nets (loading them with their weights and computing
    the blobs verify compares), round by round. Caffe runs the OS-16 pair only: at OS 4
    its forward would need about 10 GB."""
    from surgery.io.prototxt import save_prototxt
    from surgery.models.segmentation import pspnet

    cli = cli_argv()
    missing = [c for c in ("init-weights", "dilate", "verify") if not _has_command(c)]
    group = f"verify PSPNet-50 @{size}"
    if missing:
        table.add(group, f"skipped: command(s) {', '.join(missing)} not available yet")
        return
    net, weights = Path(workdir) / "psp50.prototxt", Path(workdir) / "psp50.caffemodel"
    save_prototxt(pspnet(50, input_size=size), net)
    init = measure(cli + ["init-weights", str(net), "-o", str(weights)])
    table.add(group, "init-weights (46.6M parameters)", init,
              note="" if init.returncode == 0 else f"FAILED: {init.stderr.strip()[:100]}")
    caffe = caffe_build()
    if caffe is not None:
        os.environ["CAFFE_PYTHONPATH"] = caffe[1]
        os.environ.setdefault("GLOG_minloglevel", "2")
    for stride, flags in ((16, ["--dilation", "round"]), (4, [])):
        converted = Path(workdir) / f"psp50-os{stride}.prototxt"
        dil = measure(cli + ["dilate", str(net), "-s", str(stride), *flags, "-o", str(converted)])
        if init.returncode or dil.returncode:
            table.add(group, f"OS {stride} skipped: a preparation step failed",
                      note=(init.stderr or dil.stderr).strip()[:100])
            continue
        engines = [("opencv", OPENCV_FORWARD, [PY])]
        if caffe is not None and stride == 16:
            pythonpath = os.pathsep.join([caffe[1], str(ROOT / "surgery" / "engines" / "pylayers")])
            engines.append(("caffe", CAFFE_FORWARD, ["env", f"PYTHONPATH={pythonpath}", caffe[0]]))
        for engine, script, python in engines:
            argv = cli + ["verify", str(net), str(converted), "--weights", str(weights),
                          "--engine", engine, "--json"]
            if engine == "caffe":
                argv += ["--caffe-python", caffe[0]]
            first = measure(argv)
            if first.returncode not in (0, 1):
                table.add(group, f"verify OS {stride} ({engine}) FAILED", first,
                          note=first.stderr.strip()[:100])
                continue
            blobs = [b["blob"] for b in json.loads(first.stdout)["blobs"]]
            runs = _prepared_pair(workdir, f"os{stride}", net, converted, weights, blobs, engine)
            forward = python + ["-c", script, json.dumps(runs), json.dumps([1, 3, size, size])]
            ver, base = measure_alternating([argv, forward], repeat=repeat)
            ratio = paired_ratio(ver, base)
            table.add(group, f"{engine}: its own forward of both nets (OS 8, OS {stride})", base,
                      note="" if base.returncode == 0 else f"FAILED: {base.stderr.strip()[-100:]}")
            table.add(group, f"{engine}: verify OS 8 vs OS {stride}", ver,
                      ratio=f"{ratio:.2f}x the engine's forward", target="<= 1.5x, PASS",
                      ok=ratio <= 1.5 and ver.returncode == 0,
                      note=f"verdict: {_verdict(ver)}; blobs {', '.join(blobs)}")
        for path in Path(workdir).glob(f"os{stride}-*"):
            path.unlink()


# The pycaffe recipe fold replaces (MobileNet-SSD's merge_bn.py and its copies): load the
# net and its weights, load the folded net, compute each folded conv's weights and bias
# from the BatchNorm/Scale after it, copy the rest, save. Runs under Caffe's interpreter.
PYCAFFE_FOLD = """
import sys
import numpy as np
import caffe
original, weights, folded, out = sys.argv[1:5]
net = caffe.Net(original, weights, caffe.TEST)
new = caffe.Net(folded, caffe.TEST)
chain, fold = {}, {}     # blob -> [conv, BN/Scale layers applied since]; conv -> those layers
for name, layer in zip(net._layer_names, net.layers):
    bottom, top = net.bottom_names[name], net.top_names[name]
    if layer.type in ("Convolution", "InnerProduct"):
        chain[top[0]] = [name]
    elif layer.type in ("BatchNorm", "Scale") and bottom and bottom[0] in chain:
        chain[top[0]] = chain.pop(bottom[0]) + [name]
        fold[chain[top[0]][0]] = chain[top[0]][1:]
    else:
        for blob in top:
            chain.pop(blob, None)
for name in new.params:
    params = net.params[name]
    if name not in fold:
        for i, blob in enumerate(params):
            new.params[name][i].data[...] = blob.data
        continue
    a, b = 1.0, 0.0
    for member in fold[name]:
        p = [blob.data for blob in net.params[member]]
        if len(p) == 3:       # BatchNorm: mean*f, var*f, f
            k = 0 if p[2][0] == 0 else 1 / p[2][0]
            mul = 1 / np.sqrt(p[1] * k + 1e-5)
            add = -p[0] * k * mul
        else:                 # Scale
            mul, add = p[0], p[1] if len(p) > 1 else 0
        a, b = a * mul, b * mul + add
    w = params[0].data
    new.params[name][0].data[...] = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
    new.params[name][1].data[...] = (params[1].data * a if len(params) > 1 else 0) + b
new.save(out)
"""


def bench_fold(table, workdir, repeat):
    """fold on ResNet-152 against the pycaffe recipe (PYCAFFE_FOLD), in turn, same run."""
    group = "fold ResNet-152"
    net = resnet152_prototxt(workdir)
    caffe = caffe_build()
    if net is None or caffe is None:
        table.add(group, "skipped: " + ("no ResNet-152 prototxt" if net is None else
                                        "no Caffe build (tools/build_caffe.sh)"))
        return
    cli = cli_argv()
    weights = Path(workdir) / "r152.caffemodel"
    init = measure(cli + ["init-weights", str(net), "-o", str(weights)])
    folded, out = Path(workdir) / "r152_folded.prototxt", Path(workdir) / "r152_folded.caffemodel"
    recipe_out = Path(workdir) / "r152_recipe.caffemodel"
    argv = cli + ["fold", str(net), "--weights", str(weights), "-o", str(folded),
                  "--weights-out", str(out)]
    first = measure(argv)          # the folded prototxt the recipe loads
    if init.returncode or first.returncode:
        table.add(group, "skipped: " + (init.stderr or first.stderr).strip()[:100])
        return
    python, pythonpath = caffe
    recipe = ["env", f"PYTHONPATH={pythonpath}", "GLOG_minloglevel=2", python, "-c",
              PYCAFFE_FOLD, str(net), str(weights), str(folded), str(recipe_out)]
    # settle: the recipe's save does not wait for the disk, fold's does (its outputs are
    # fsynced before they are renamed into place); each run starts with the disk flushed,
    # so neither pays for the other's data.
    base, run = measure_alternating([recipe, argv], repeat=max(repeat, 3), settle=True)
    table.add(group, "baseline: pycaffe recipe (load, compute, save)", base, note=_failed(base))
    ratio, memory = paired_ratio(base, run), base.rss_mb / max(run.rss_mb, 1e-9)
    table.add(group, f"fold --weights-out ({weights.stat().st_size / 1e6:.0f} MB of weights)",
              run, ratio=f"{ratio:.1f}x faster, {memory:.0f}x less memory",
              target=">= 5x faster, >= 20x less memory, < 100 MB",
              ok=run.returncode == 0 and base.returncode == 0 and ratio >= 5 and memory >= 20
              and run.rss_mb < 100, note=_failed(run))


def _verdict(sample):
    return {0: "PASS", 1: "FAIL (outputs differ)"}.get(
        sample.returncode, f"error: {sample.stderr.strip()[:100]}")


def bench_report(table, workdir, repeat):
    """ResNet-152's OS-8 conversion report: time to write, page size, render time in
    headless Chromium (navigation start to the first frame after `load`) against a
    blank page loaded the same way."""
    group = "report ResNet-152 OS 8"
    net = resnet152_prototxt(workdir)
    if net is None:
        table.add(group, "skipped: no ResNet-152 prototxt found")
        return
    if not _has_command("report") or not shutil.which("dot"):
        table.add(group, "skipped: the report command or Graphviz dot is not available")
        return
    cli = cli_argv()
    converted, page = Path(workdir) / "r152_os8.prototxt", Path(workdir) / "r152_os8.html"
    dil = measure(cli + ["dilate", str(net), "-s", "8", "--head", "cut", "-o", str(converted)])
    if dil.returncode:
        table.add(group, "skipped: dilate failed", note=dil.stderr.strip()[:100])
        return
    startup = measure(cli + ["report", "--help"], repeat=max(repeat, 3))
    table.add(group, "CLI start-up: report --help", startup)
    run = measure(cli + ["report", str(net), str(converted), "-o", str(page)], repeat=repeat)
    table.add(group, "report (load, analyse, dot, write)", run,
              ratio=f"{run.seconds / startup.seconds:.1f}x start-up",
              note="" if run.returncode == 0 else f"FAILED: {run.stderr.strip()[:100]}")
    if run.returncode:
        return
    size = page.stat().st_size
    table.add(group, f"page size {size / 1e6:.2f} MB", None, target="< 3 MB", ok=size < 3e6)
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from _browser import chromium_path, open_page
        import playwright.sync_api  # noqa: F401
    except ImportError:
        table.add(group, "render skipped: playwright is not installed (pip install '.[test]')")
        return
    if chromium_path() is None:
        table.add(group, "render skipped: Chromium is not installed")
        return
    blank = Path(workdir) / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>blank"
                     "</title></head><body></body></html>\n")
    base = min(open_page(blank).render_ms for _ in range(max(repeat, 3)))
    table.add(group, "floor: blank page in headless Chromium", None, seconds=base / 1000)
    loads = [open_page(page) for _ in range(repeat)]
    best = min(loads, key=lambda s: s.render_ms)
    clean = all(s.requests == [s.url] and not s.errors for s in loads)
    table.add(group, f"render in headless Chromium ({len(best.nodes)} boxes)", None,
              seconds=best.render_ms / 1000, ratio=f"{best.render_ms / base:.1f}x blank page",
              target="< 5 s, no request", ok=best.render_ms < 5000 and clean,
              note="" if clean else f"requests {best.requests}, errors {best.errors}")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    import google.protobuf
    from google.protobuf.internal import api_implementation

    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "ram_gib": round(mem, 1),
            "python": platform.python_version(),
            "protobuf": f"{google.protobuf.__version__} ({api_implementation.Type()})",
            "platform": platform.platform()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.5,2.5",
                        help="caffemodel sizes in GB (10^9 bytes), comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="one 50 MB model, verify at 224 only, single runs: checks the script works")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (the fastest counts)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--big", type=float, default=2.5, metavar="GB",
                        help="size of the fc-chain net for init-weights and fcn (0: skip)")
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only these groups (repeatable)")
    parser.add_argument("--workdir", help="where generated files go (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected numbers like 0.5,2.5")
    if args.quick:
        args.sizes, args.repeat, args.big = [0.05], 1, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    # Children import the checkout this script is in, whatever is installed in the venv.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    # ... from bytecode, as an installed package runs (pip compiles it on install). Under
    # PYTHONDONTWRITEBYTECODE a checkout is otherwise compiled again by every child, and
    # the start-up rows would time the compiler (about 0.07 s for `dilate`).
    compileall.compile_dir(str(ROOT / "surgery"), quiet=1)
    info = machine()
    print(f"caffe-surgery benchmarks, {info['date']}: {info['cpu']}, {info['ram_gib']} GiB RAM, "
          f"Python {info['python']}, protobuf {info['protobuf']}")
    print(HEADER)
    table = Table()
    groups = args.only or list(GROUPS)
    workdir = tempfile.mkdtemp(prefix="surgery-bench-", dir=args.workdir)
    try:
        if "weights" in groups:
            bench_weights(table, args.sizes, workdir, args.repeat)
        if "dilate" in groups:
            bench_dilate(table, workdir, args.repeat)
        if "scaling" in groups:
            bench_scaling(table, workdir, args.repeat, SCALING_QUICK if args.quick else SCALING)
        if "verify" in groups:
            bench_verify(table, workdir, args.repeat, (224,) if args.quick else VERIFY_SIZES)
        if "forks" in groups and not args.quick:
            bench_forks(table, workdir, args.repeat)
        if "report" in groups:
            bench_report(table, workdir, args.repeat)
        if "init-fcn" in groups:
            bench_init_fcn(table, workdir, args.repeat, args.big)
        if "fold" in groups:
            bench_fold(table, workdir, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": table.rows}, f, indent=1)
            f.write("\n")
    missed = [r for r in table.rows if r["ok"] is False]
    print(f"{len(table.rows)} rows; {len(missed)} target(s) not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
