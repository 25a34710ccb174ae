"""caffe-surgery: model surgery for Caffe networks.

See README.md for the command line and DESIGN.md for how the package is laid out.
"""

__version__ = "0.1.0"
