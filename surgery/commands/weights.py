"""List what a .caffemodel holds: each layer's name, type and blob shapes.

Reads the file's structure without loading any weights, so it is quick and
light even on multi-GiB models. V1 (`layers`) files show the type their enum
upgrades to; blobs stored with legacy num/channels/height/width dims show
those four dims. --json prints {"layers": [{"name", "type", "blobs"}], "params"}.
"""

import json
import sys

from .. import api

NAME = "weights"
HELP = "list the layers and blob shapes stored in a .caffemodel"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.caffemodel", help="weights file to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args):
    result = api.weights(args.model)
    sys.stdout.write(json.dumps(result.to_json()) + "\n" if args.json else result.text)
    return 0
