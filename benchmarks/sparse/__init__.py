"""Sparse-annotation benchmark: MedSeg fine-tuning against Slicer's Fill between slices and Grow from seeds.

Run ``python -m benchmarks.sparse.run --help`` from the repository root.
"""
