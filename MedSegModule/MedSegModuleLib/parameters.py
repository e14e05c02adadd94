"""Fields of the module's parameter node (``MedSegModule.py`` wraps them with
``@parameterNodeWrapper``; the ``.ui`` binds widgets to them through ``SlicerParameterName``)."""

from __future__ import annotations

import enum
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

try:
    from slicer.parameterNodeWrapper import WithinRange
except ImportError:  # the slicer-core wheel has no parameterNodeWrapper: keep the ranges readable for its tests

    class WithinRange:  # type: ignore[no-redef]
        """The two attributes Slicer's ``WithinRange`` validator has (what the GUI connectors read)."""

        def __init__(self, minimum, maximum) -> None:
            self.minimum, self.maximum = minimum, maximum

# Bounds of the spin boxes (the GUI connectors set them from these; the .ui shows the same).
# A time budget of 0 is the spin box's special value "automatic": the engine's default.
TIME_BUDGET_RANGE = (0.0, 7200.0)
MAX_STEPS_RANGE = (0, 100000)


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
    sparseTimeBudget - a cap on seconds of training (0, shown as "automatic" = the engine's default: 120 on CPU, 30 on GPU).
    sparseMaxSteps - training steps (0, shown as "automatic" = the engine's step budget, set by the annotation).
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
    sparseTimeBudget: Annotated[float, WithinRange(*TIME_BUDGET_RANGE)] = 0.0
    sparseMaxSteps: Annotated[int, WithinRange(*MAX_STEPS_RANGE)] = 0
    sparsePrediction: vtkMRMLSegmentationNode
    evaluatePrediction: vtkMRMLSegmentationNode
    evaluateReference: vtkMRMLSegmentationNode
    evaluateSurface: bool = True
