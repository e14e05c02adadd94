"""Running models: device choice, sliding-window inference, the whole segmentation pipeline.

This package's own namespace stays free of torch so the command line starts fast.
"""

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
