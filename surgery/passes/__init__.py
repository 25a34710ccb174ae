"""Transforms over an analysed net. Each returns a new net and a change list; inputs are not mutated."""
