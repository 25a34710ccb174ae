"""Caffe Python layers for fork layer types BVLC Caffe lacks (forklayers.py).

This folder, not the package, goes on the pycaffe child's PYTHONPATH, so the module
imports as `forklayers` there without the rest of `surgery` beside it.
"""
