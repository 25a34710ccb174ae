"""Which published families convert, in which directions, with which labels: measured.

Runs `caffe-surgery dilate NET -s N --dry-run --json` (in process, as a user would run it)
on the public nets in ../shared/corpus and on nets of the published structure the project
builds for the families the corpus lacks (surgery/models/segmentation.py,
tests/_detection.py), for N = 4, 8, 16 and 32. A refusal that names `--pooling cover` or
`--dilation round` as the way through is tried again with that flag, as a user following
the message would. Each cell says what came out: the result (EXACT, ADAPTED or
APPROXIMATE, as dilate's `result:` line says it), the count of each layer status, and for
which input sizes the exact part holds; or the layers a refusal names.

    python tools/published.py            # print both tables
    python tools/published.py --write    # rewrite them in docs/published.md and README.md

tests/test_published.py recomputes every row it can (corpus rows need ../shared/corpus)
and fails when a table in the docs no longer says what the commands do.
"""

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
TARGETS = (4, 8, 16, 32)
FLAGS_TRIED = ("--pooling cover", "--dilation round")   # what a refusal may point to
DOC, README = ROOT / "docs" / "published.md", ROOT / "README.md"
BEGIN, END = "<!-- published:{} begins: tools/published.py writes it -->", "<!-- published:{} ends -->"


class Family(NamedTuple):
    name: str        # the row's label
    kind: str        # backbone, segmentation, detection
    source: str      # a corpus path, or "generator(...)" in the project
    flags: tuple     # what every run gets (a backbone's classifier head is cut)
    make: object     # None for a corpus file; else a function returning prototxt text


def _generated(factory, *args, **kw):
    def make():
        import importlib

        if str(ROOT / "tests") not in sys.path:      # tests/_detection.py
            sys.path.insert(0, str(ROOT / "tests"))
        module, name = factory.rsplit(".", 1)
        built = getattr(importlib.import_module(module), name)(*args, **kw)
        if isinstance(built, str):
            return built
        from surgery.io.prototxt import format_prototxt
        return format_prototxt(built)
    return make


CUT = ("--head", "cut")
FAMILIES = [
    Family("ResNet-50 (MSRA)", "backbone", "resnet_kaiming/ResNet-50-deploy.prototxt", CUT, None),
    Family("ResNet-101 (MSRA)", "backbone", "resnet_kaiming/ResNet-101-deploy.prototxt", CUT, None),
    Family("VGG-16", "backbone", "vgg/VGG_ILSVRC_16_layers_deploy.prototxt", CUT, None),
    Family("SqueezeNet v1.0", "backbone", "squeezenet/SqueezeNet_v1.0_deploy.prototxt", CUT, None),
    Family("MobileNet v1", "backbone", "mobilenet/mobilenet_deploy.prototxt", CUT, None),
    Family("DenseNet-121", "backbone", "densenet/DenseNet_121.prototxt", CUT, None),
    Family("FCN-32s (val)", "segmentation", "fcn/voc-fcn32s_val.prototxt",
           ("--input-shape", "data=1,3,500,500"), None),
    Family("FCN-8s (deploy)", "segmentation", "fcn/voc-fcn8s_deploy.prototxt", (), None),
    Family("DeepLab v1 LargeFOV (test, template)", "segmentation",
           "deeplab_v1/DeepLab-LargeFOV_test.prototxt", (), None),
    Family("DeepLab v2 VGG-16 (train, template)", "segmentation",
           "deeplab_v2/vgg16_train.prototxt", (), None),
    Family("DeepLab v2 VGG-16 (test)", "segmentation",
           "surgery.models.segmentation.deeplab_v2_vgg()", (),
           _generated("surgery.models.segmentation.deeplab_v2_vgg")),
    Family("DeepLab v2 ResNet-101 MSC (test)", "segmentation",
           "surgery.models.segmentation.deeplab_v2_resnet(101)", (),
           _generated("surgery.models.segmentation.deeplab_v2_resnet", 101)),
    Family("DeepLab v2 ResNet-101 MSC (train)", "segmentation",
           'surgery.models.segmentation.deeplab_v2_resnet(101, phase="TRAIN")', (),
           _generated("surgery.models.segmentation.deeplab_v2_resnet", 101, phase="TRAIN")),
    Family("PSPNet-50", "segmentation", "surgery.models.segmentation.pspnet(50)", (),
           _generated("surgery.models.segmentation.pspnet", 50)),
    Family("PSPNet-101 (VOC, 473)", "segmentation", "pspnet/pspnet101_VOC2012_473.prototxt", (),
           None),
    Family("Dilation8 (VOC)", "segmentation", "dilation/dilation8_pascal_voc_deploy.prototxt",
           (), None),
    Family("ENet", "segmentation", "enet/enet_deploy_final.prototxt", (), None),
    Family("SegNet", "segmentation", "segnet/segnet_inference.prototxt", (), None),
    Family("SSD300 (deploy)", "detection", "ssd/SSD_300x300_deploy.prototxt", (), None),
    Family("Faster R-CNN ZF (test)", "detection", "faster_rcnn/ZF_test.prototxt", (), None),
    Family("Faster R-CNN VGG-16 (test)", "detection", 'tests/_detection.py faster_rcnn("vgg16")',
           (), _generated("_detection.faster_rcnn", "vgg16")),
    Family("Faster R-CNN VGG-16 (train)", "detection",
           'tests/_detection.py faster_rcnn("vgg16", train=True)',
           ("--input-shape", "data=1,3,224,224"),
           _generated("_detection.faster_rcnn", "vgg16", train=True)),
    Family("R-FCN ResNet-101 (test)", "detection", "tests/_detection.py rfcn()", (),
           _generated("_detection.rfcn")),
]


class Cell(NamedTuple):
    native: bool = False
    flags: tuple = ()             # the flags the run needed beyond the family's own
    result: str = ""              # EXACT / ADAPTED / APPROXIMATE, "" when refused
    counts: tuple = ()            # ((status, n), ...)
    sizes: str = ""               # for which input sizes the exact part holds
    blocked: str = ""             # a refusal: what it names
    missed: int = 0               # the stride reached, when it is not the one asked for

    def full(self):
        if self.native:
            return "native"
        given = "".join(f"`{f}`: " for f in self.flags)
        if not self.result:
            return f"{given}refused: {self.blocked}"
        counts = ", ".join(f"{n} {s.lower()}" for s, n in self.counts)
        missed = f"; the output blob is at stride {self.missed}" if self.missed else ""
        return f"{given}**{self.result}** ({counts}); {self.sizes}{missed}"

    def short(self):
        if self.native:
            return "native"
        if not self.result:
            return "refused"
        given = " ".join(f.split()[-1] for f in self.flags)
        missed = f" at OS {self.missed}" if self.missed else ""
        return self.result + missed + (f" ({given})" if given else "")


def _cli(*argv):
    from surgery.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _sizes(text):
    if text == "exact for every input size":
        return "every input size"
    found = re.search(r"H mod (\d+) in \{([^}]*)\}", text)
    if found:
        return f"sizes with H, W mod {found.group(1)} in {{{found.group(2)}}}"
    if "analysed input size" in text:
        return "the analysed input size (other sizes not checked)"
    return text.removeprefix("exact for ")


def _blocked(message):
    """What a refusal names: its layers (as it counts them), or its reason."""
    why = message.split(" is not reachable: ", 1)[-1]
    why = re.split(r"; (it gets through|no flag gets)", why)[0]
    layers = re.findall(r"layer '([^']+)'", why)
    more = re.search(r"and (\d+) more$", why)
    if layers:
        named = ", ".join(f"`{name}`" for name in layers)
        return named + (f" and {more.group(1)} more" if more else "")
    return why.split(" (")[0]


def convert(path, stride, flags):
    """The cell for `dilate PATH -s STRIDE FLAGS`, retried with each flag a refusal names."""
    extra = []
    while True:
        code, out, err = _cli("dilate", path, "-s", stride, *flags,
                              *[w for f in extra for w in f.split()], "--dry-run", "--json")
        if code == 0:
            summary = json.loads(out)
            strides = summary["output_stride"]
            if not summary["changes"] or strides["before"] == strides["after"] == [stride] * 2:
                return Cell(native=True)        # at most a classifier head cut
            statuses = ["REMOVED" if c["action"] == "remove" else c["status"]
                        for c in summary["changes"]]
            counts = tuple((s, statuses.count(s)) for s in
                           ("EXACT", "ADAPTED", "APPROXIMATE", "REMOVED") if s in statuses)
            result = ("EXACT" if summary["exact"] else
                      "APPROXIMATE" if "APPROXIMATE" in statuses else "ADAPTED")
            missed = strides["after"][0] if strides["after"] != [stride] * 2 else 0
            return Cell(flags=tuple(extra), result=result, counts=counts,
                        sizes=_sizes(summary["exact_sizes"]), missed=missed)
        message = err.strip().splitlines()[-1]
        ways = message.split("it gets through with", 1)[-1] if "it gets through" in message else ""
        ways = ways.split("; reachable", 1)[0]
        new = [f for f in FLAGS_TRIED if f in ways and f not in extra]
        if not new:
            return Cell(flags=tuple(extra), blocked=_blocked(message))
        extra.append(new[0])


def available(family):
    return family.make is not None or (CORPUS / family.source).exists()


def measure(family, folder):
    """{stride: Cell} for one family, or None when its corpus file is not here."""
    if not available(family):
        return None
    if family.make is None:
        path = CORPUS / family.source
    else:
        path = Path(folder) / (re.sub(r"\W+", "_", family.name) + ".prototxt")
        path.write_text(family.make(), encoding="utf-8")
    return {s: convert(path, s, family.flags) for s in TARGETS}


def _source(family):
    where = "corpus" if family.make is None else "built"
    return f"{where}: `{family.source}`"


def full_row(family, cells):
    flags = " ".join(family.flags)
    return ("| " + " | ".join([family.name, _source(family), f"`{flags}`" if flags else ""]
                              + [cells[s].full() for s in TARGETS]) + " |")


def short_row(family, cells):
    return "| " + " | ".join([family.name] + [cells[s].short() for s in TARGETS]) + " |"


FULL_HEAD = ("| net | file | flags given | to OS 4 | to OS 8 | to OS 16 | to OS 32 |\n"
             "|---|---|---|---|---|---|---|")
SHORT_HEAD = ("| net | to OS 4 | to OS 8 | to OS 16 | to OS 32 |\n"
              "|---|---|---|---|---|")


def rows(families=FAMILIES):
    """[(family, full row, short row)] for every family whose file is here."""
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for family in families:
            cells = measure(family, folder)
            if cells is not None:
                out.append((family, full_row(family, cells), short_row(family, cells)))
    return out


def _span(text, tag):
    begin = BEGIN.format(tag)
    return text.index(begin) + len(begin), text.index(END.format(tag))


def block(text, tag):
    """The lines between the markers of `tag` in `text`."""
    start, stop = _span(text, tag)
    return text[start:stop].strip("\n").splitlines()


def _replace(path, tag, lines):
    text = path.read_text(encoding="utf-8")
    start, stop = _span(text, tag)
    path.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[stop:], encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite the tables in docs/published.md and README.md")
    args = parser.parse_args(argv)
    missing = [f.source for f in FAMILIES if not available(f)]
    if args.write and missing:
        sys.exit(f"published.py: the corpus files {', '.join(missing)} are not in {CORPUS}")
    found = rows()
    full = [FULL_HEAD] + [r[1] for r in found]
    short = [SHORT_HEAD] + [r[2] for r in found]
    if args.write:
        _replace(DOC, "table", full)
        _replace(README, "summary", short)
    else:
        print("\n".join(full) + "\n\n" + "\n".join(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
