"""`surgery.api.segment`: a classification backbone made a trainable segmentation net."""

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import SurgeryError
from .base import Log, Result, load, refuse_open_sizes, transaction


@dataclass
class Segmented(Result):
    segmented: object       # transform.segment.Segmented: `.train`, `.deploy`, `.report`
    output: Optional[str]   # the train net's file
    deploy: Optional[str]   # the deploy net's file
    weights: Optional[str]  # the backbone's weights read
    weights_out: Optional[str]
    solver: Optional[str]
    max_iter: int
    weights_added: Optional[list]  # the new layers written to weights_out, in order

    @property
    def train(self):
        return self.segmented.train

    @property
    def deploy_net(self):
        return self.segmented.deploy

    @property
    def text(self):
        return _summary(self)

    def to_json(self):
        data = self.segmented.report.to_json()
        data["files"] = {"train": self.output, "deploy": self.deploy,
                         "weights": self.weights_out, "solver": self.solver}
        data["weights_added"] = self.weights_added
        return data


def segment(net, *, head, classes, output_stride=8, crop=None, rates=None, bins=None,
            data="imagesegdata", upsample="interp", ignore_label=255, scales=None,
            train_bn=False, cut_after=None, weights=None, weights_out=None, seed=0,
            output=None, deploy=None, solver=None, max_iter=20000, iter_size=None,
            strict=False, outputs=None, on_message=None, progress=None):
    """Put a `head` ("aspp", "deeplabv3", "deeplabv3plus", "psp", "largefov") for
    `classes` classes on the backbone at `net`, dilated to `output_stride`, with a label
    branch and loss (the train net, to `output`), a deploy net (to `deploy`), DeepLab's
    solver (to `solver`) and the initial weights (to `weights_out`: the backbone's
    `weights` copied, the new layers drawn from their fillers with `seed`). `crop` is
    (H, W), `scales` decimal texts like ("1", "0.75", "0.5"); the rest as the CLI."""
    from ..io.caffemodel import read_caffemodel
    from ..io.prototxt import format_prototxt
    from ..transform.segment import segment as make, solver as make_solver, write_weights

    if weights and not weights_out:
        raise SurgeryError("--weights is read to write --weights-out INIT.caffemodel (the "
                           "backbone's layers plus the new ones); give --weights-out")
    if solver and not output:
        raise SurgeryError("the solver names the train net: give it an output file")
    output, deploy, weights_out, solver = (None if p is None else os.fspath(p)
                                           for p in (output, deploy, weights_out, solver))
    log = Log(on_message)
    inputs = [net] + ([weights] if weights else [])
    with transaction(outputs, inputs=inputs, targets=(output, deploy, weights_out, solver),
                     progress=progress) as out:
        loaded = load(net, strict=strict, log=log)
        refuse_open_sizes(loaded, "substitute the placeholders first")
        result = make(loaded.net, head=head, classes=classes, output_stride=output_stride,
                      crop=crop, rates=rates, bins=bins, data=data, upsample=upsample,
                      ignore_label=ignore_label, cut_after=cut_after, train_bn=train_bn,
                      scales=scales, unknowns=loaded.unknowns)
        written = None
        if weights_out:
            written = write_weights(result, weights, weights_out, seed=seed, outputs=out)
            _check_written(result, read_caffemodel(out.staged(weights_out)), written,
                           backbone=bool(weights))
        if output:
            out.write(output, format_prototxt(result.train).encode("utf-8"))
        if deploy:
            out.write(deploy, format_prototxt(result.deploy).encode("utf-8"))
        if solver:
            rest = make_solver(result, output, max_iter=max_iter, iter_size=iter_size)
            first = type(rest)(net=rest.net)        # `net:` first, as solver files have it
            rest.ClearField("net")
            out.write(solver, (format_prototxt(first) + format_prototxt(rest)).encode("utf-8"))
    return log.done(Segmented(result, output, deploy, weights, weights_out, solver, max_iter,
                              written))


def _check_written(result, summary, written, *, backbone):
    """SurgeryError (nothing written) unless the weights written load into both nets."""
    from ..analysis.analyse import analyse
    from ..analysis.check import compare, merge, wanted_shapes

    expect = [wanted_shapes(analyse(n)) for n in (result.train, result.deploy)]
    if not backbone:    # the new layers only: the backbone's come from its file
        expect = [{k: v for k, v in e.items() if k in written} for e in expect]
    if not merge([compare(e, summary) for e in expect]).ok:
        raise SurgeryError("internal error: the written weights do not load into the "
                           "nets (nothing written)")


def _filler(f):
    kind = f.type or "constant"
    if kind == "constant":
        return f"{f.value:g}"
    if kind == "gaussian":
        return f"gaussian std {f.std:g}"
    return kind


def _summary(made):
    """The text of a Segmented result."""
    from ..layers import rule_for

    result, written = made.segmented, made.weights_added
    r = result.report
    d = r.dilate
    rewritten = [c for c in d.changes if c.action == "rewrite"]
    lines = [f"segment: {r.head} head, {r.classes} classes, output stride {r.output_stride}, "
             f"crop {r.crop.h}x{r.crop.w}",
             f"backbone: trunk '{r.trunk}' {'x'.join(map(str, r.trunk_shape))}; dilate rewrote "
             f"{len(rewritten)} layers ({'exact' if d.exact else 'approximate'})"
             + (f"; cut {', '.join(r.cut)}" if r.cut else "")]
    if r.frozen:
        lines.append(f"  {r.frozen}")
    if r.fcn is not None:
        lines.append("  fcn: " + ", ".join(f"{p.source} -> {p.target}" for p in r.fcn.layers)
                     + " (fc6 decimated)")
    lines.append(f"head: {r.settings}; score {'x'.join(map(str, r.score_shape))}")
    if r.scales:
        lines.append("  scales (weights shared by param name, fused by Eltwise MAX): "
                     + ", ".join(f"{float(s):g} '{blob}' {'x'.join(map(str, shape[2:]))}"
                                 for s, blob, shape in r.scales))
    lines.append("  receptive field of each branch, in image pixels:")
    width = max(len(label) for label, _, _ in r.branches) if r.branches else 4
    for label, blob, rf in r.branches:
        size = f"{rf.h}" if rf.h == rf.w else f"{rf.h}x{rf.w}"
        lines.append(f"    {label:<{width}}  {blob:<24} {size}")
    layers = {layer.name: layer for n in (result.train, result.deploy) for layer in n.layer}
    for what, path, added, note in (("train", made.output, r.added_train, r.label),
                                    ("deploy", made.deploy, r.added_deploy, r.output)):
        if what == "deploy" and not path:
            continue
        own = [(n, t) for n, t in added if n not in r.copies]
        shown = [(n, t) for n, t in own if list(layers[n].top) != list(layers[n].bottom)]
        more = [f"{len(own) - len(shown)} of them in place (BatchNorm, Scale, ReLU, Dropout)"] \
            if len(shown) < len(own) else []
        more += [f"{len(added) - len(own)} the other scales' copies"] \
            if len(own) < len(added) else []
        lines.append(f"{what} net {path}: {len(added)} layers added"
                     + "".join(f", {m}" for m in more))
        lines.append("  " + ", ".join(f"{n} ({t})" for n, t in shown))
        lines.append(f"  {note}")
    if written is not None:
        lines.append(f"weights {made.weights_out}: the backbone's layers copied from "
                     f"{made.weights}; {len(written)} new layers:" if made.weights else
                     f"weights {made.weights_out}: the {len(written)} new layers only (no "
                     f"--weights); train with --weights BACKBONE.caffemodel,"
                     f"{made.weights_out} so Caffe loads the backbone's too:")
        sources = {p.target: p for p in (result.fcn.layers if result.fcn is not None else [])}
        for name in written:
            layer = layers[name]
            if name in sources:
                p = sources[name]
                lines.append(f"  {name} ({layer.type}): {'x'.join(map(str, p.weight_shape))}"
                             f"{', ' + str(p.num_output // p.out_step) if p.bias else ''} "
                             f"rebuilt from {p.source} by fcn")
                continue
            shapes = r.new_params[name]
            fills = rule_for(layer.type).fillers(layer)
            parts = [f"{'x'.join(map(str, s))} {_filler(f)}" for s, f in zip(shapes, fills)]
            lines.append(f"  {name} ({layer.type}): {'; '.join(parts)}")
        lines.append("  check: loads into the train and deploy nets")
    if made.solver:
        lines.append(f"solver {made.solver}: net \"{made.output}\", base_lr {r.base_lr:g}, "
                     f"lr_policy poly (power 0.9), momentum 0.9, weight_decay 0.0005, "
                     f"max_iter {made.max_iter}")
    lines.extend(f"note: {n}" for n in r.notes)
    return "\n".join(lines) + "\n"
