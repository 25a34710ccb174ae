"""Regenerate surgery/caffe_pb2.py from proto/caffe.proto.

The generated module is committed so that users need only the protobuf
runtime; this script (and grpcio-tools) is needed only when the schema
changes. tests/test_schema.py checks that the committed module is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTO_FILE = "caffe.proto"
DEFAULT_OUT = ROOT / "surgery"


def compile_proto(*, out_dir: Path = DEFAULT_OUT, proto_dir: Path = PROTO_DIR) -> Path:
    """Run protoc (python_out only) and return the path of caffe_pb2.py."""
    from grpc_tools import protoc  # imported late: only this tool needs it

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        str(proto_dir / PROTO_FILE),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {proto_dir / PROTO_FILE}")
    return out_dir / "caffe_pb2.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out-dir", type=Path, default=DEFAULT_OUT,
                        help="directory to write caffe_pb2.py into (default: surgery/)")
    args = parser.parse_args(argv)
    try:
        path = compile_proto(out_dir=args.out_dir)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
