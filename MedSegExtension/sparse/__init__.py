"""Sparse-annotation mode: a few labelled slices (or scribbles) → a fine-tuned 3D U-Net → the whole volume.

After Çiçek et al. (2016): voxels nobody labelled get weight zero in the loss, so a handful of
slices in any orientation is enough to train on.
"""
