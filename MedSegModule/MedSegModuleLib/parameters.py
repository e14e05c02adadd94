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
    annotationSegmentation - the user's sparse annotation (its segments are the classes).
    sparseModelName - the name the fine-tuned model is saved under ("" = from the volume's name).
    sparseFromScratch - train from random weights instead of the selected model.
    sparseTimeBudget - seconds of training (0 = the engine's default: 150 on CPU, 30 on GPU).
    sparseMaxSteps - at most this many training steps.
    sparsePrediction - the latest fine-tuned prediction (a separate segmentation).
    evaluatePrediction, evaluateReference - the two segmentations to compare.
    evaluateSurface - also compute surface distances (HD95, HD, ASSD).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    hardenOnLoad: bool = False
    modelKey: str = ""
    device: DeviceChoice = DeviceChoice.AUTO
    quality: Quality = Quality.FAST
    computeUncertainty: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    annotationSegmentation: vtkMRMLSegmentationNode
    sparseModelName: str = ""
    sparseFromScratch: bool = False
    sparseTimeBudget: float = 0.0
    sparseMaxSteps: int = 3000
    sparsePrediction: vtkMRMLSegmentationNode
    evaluatePrediction: vtkMRMLSegmentationNode
    evaluateReference: vtkMRMLSegmentationNode
    evaluateSurface: bool = True
