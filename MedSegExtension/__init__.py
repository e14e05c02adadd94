"""MedSeg engine: Slicer-free reading, preprocessing, 3D U-Net inference and training.

Nothing in this package imports ``slicer``, ``qt`` or ``vtk``; the Slicer module, the
``medseg`` command line and the tests all drive the same code.
"""

__version__ = "0.1.0"
