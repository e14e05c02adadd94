"""Fields of the module's parameter node (``MedSegModule.py`` wraps them with
``@parameterNodeWrapper``; the ``.ui`` binds widgets to them through ``SlicerParameterName``)."""

from __future__ import annotations

import enum

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode


class DeviceChoice(enum.Enum):
    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"

    def label(self) -> str:
        return {"auto": "Automatic (GPU if available)", "gpu": "GPU", "cpu": "CPU"}[self.value]


class Quality(enum.Enum):
    FAST = "fast"
    ACCURATE = "accurate"

    def label(self) -> str:
        return {"fast": "Fast", "accurate": "Accurate (test-time augmentation, ~4x slower)"}[self.value]


class MedSegParameters:
    """What the user chose; saved with the scene.

    inputVolume - the volume to segment.
    hardenOnLoad - bake a loaded ITK transform into the volume at once.
    modelKey - the model folder (the model list is dynamic, so it is set from code, not bound).
    device, quality, computeUncertainty - how to run the model.
    outputSegmentation, uncertaintyVolume - the latest results, for review.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    hardenOnLoad: bool = False
    modelKey: str = ""
    device: DeviceChoice = DeviceChoice.AUTO
    quality: Quality = Quality.FAST
    computeUncertainty: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
