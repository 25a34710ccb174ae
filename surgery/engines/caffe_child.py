"""Run nets in pycaffe for the caffe engine, in this process or as a child process.

pycaffe is often built for another interpreter than the one running caffe-surgery (a
system Python or a conda env with its own protobuf). surgery.engines.engine then runs this file
as a script under that interpreter:

    CAFFE_PYTHON caffe_child.py FOLDER

FOLDER/request.json lists jobs; each job names a prototxt, optional weights, input
arrays as .npy files, and the blobs to save. The answers go to FOLDER/result.json (blob
name -> .npy file, blob shapes) or, for a net Caffe cannot read, an error with its stage.
Everything else Caffe refuses (weights that do not fit, a failed shape check) aborts the
process through glog; the parent reads the reason from stderr.

Self-contained on purpose: only the standard library, numpy and caffe. It must not
import the `surgery` package, whose protobuf version that interpreter may lack.
"""

import json
import os
import sys


def _phase_excludes(layer, phase_test):
    """Whether Caffe's TEST-phase filter drops this layer (NetStateRule on phase only;
    stage and level rules are left to Caffe)."""
    if layer.include:
        return not any(not rule.HasField("phase") or rule.phase == phase_test
                       for rule in layer.include)
    return any(rule.HasField("phase") and rule.phase == phase_test for rule in layer.exclude)


def readable(caffe, prototxt, label=None):
    """None, or why this Caffe cannot build the net: its text parser refuses the file (a
    field or value its schema lacks), or a layer type is not registered in this build.
    `label` names the net in the answer when the file is a copy made for the run (then
    the layer at fault is named instead of a line of the copy)."""
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    with open(prototxt, encoding="utf-8") as handle:
        text = handle.read()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as exc:      # str(exc): '62:5 : Message type ... .'
        where, _, what = " ".join(str(exc).split()).partition(" : ")
        if label:
            layer = _layer_at(text, where.split(":")[0])
            return f"{label}{f' (layer {layer!r})' if layer else ''}: {what.rstrip('.')}"
        return f"{prototxt}:{where}: {what.rstrip('.')}" if what else f"{prototxt}: {where}"
    known = set(caffe.layer_type_list())
    missing = {}
    for layer in net.layer:
        if layer.type not in known and not _phase_excludes(layer, caffe_pb2.TEST):
            missing.setdefault(layer.type, layer.name)
    if missing:
        listed = ", ".join(f"{t} (layer '{n}')" for t, n in sorted(missing.items()))
        return f"{label or prototxt}: this Caffe has no layer type {listed}"
    return None


def _layer_at(text, line):
    """The name of the layer whose block holds `line` of a canonically written net (a
    `layer {` line, then its `  name: "..."`), or None."""
    if not line.isdigit():
        return None
    name = None
    for content in text.splitlines()[:int(line)]:
        if content.startswith("layer {"):
            name = None
        elif name is None and content.startswith("  name:"):
            name = content.split(":", 1)[1].strip().strip('"')
    return name


def run_job(caffe, job, folder, tag):
    """One net: build it (with weights when given), feed the inputs, forward when blobs
    are asked for. Returns {"blobs": {name: npy}, "shapes": {blob: dims}} or
    {"unreadable": why}."""
    import numpy as np

    why = readable(caffe, job["prototxt"], job.get("label"))
    if why is not None:
        return {"unreadable": why}
    if job.get("weights"):
        net = caffe.Net(job["prototxt"], caffe.TEST, weights=job["weights"])
    else:
        net = caffe.Net(job["prototxt"], caffe.TEST)
    inputs = {name: np.load(path) for name, path in job.get("inputs", {}).items()}
    for name, array in inputs.items():
        net.blobs[name].reshape(*array.shape)
    if inputs:
        net.reshape()
    # blob.shape, not blob.data.shape: reading .data would allocate every blob
    answer = {"shapes": {name: list(blob.shape) for name, blob in net.blobs.items()},
              "blobs": {}}
    if job.get("blobs"):
        for name, array in inputs.items():
            net.blobs[name].data[...] = array
        net.forward()
        for i, name in enumerate(job["blobs"]):
            path = os.path.join(folder, f"out-{tag}-{i}.npy")
            np.save(path, np.asarray(net.blobs[name].data, dtype=np.float32))
            answer["blobs"][name] = path
    return answer


def run_jobs(caffe, jobs, folder):
    caffe.set_mode_cpu()
    return [run_job(caffe, job, folder, i) for i, job in enumerate(jobs)]


def main(argv):
    folder = argv[1]
    with open(os.path.join(folder, "request.json"), encoding="utf-8") as handle:
        jobs = json.load(handle)["jobs"]
    try:
        import caffe
    except Exception as exc:     # ImportError, or a protobuf clash inside pycaffe
        answer = {"error": f"'import caffe' failed under {sys.executable}: "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
    else:
        answer = {"results": run_jobs(caffe, jobs, folder)}
    path = os.path.join(folder, "result.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(answer, handle)
    os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder (the surgery package) heads sys.path; its
    # modules must not shadow what pycaffe imports.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv))
