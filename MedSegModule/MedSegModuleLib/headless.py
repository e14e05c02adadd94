"""A MRML scene with the module logics Slicer would have registered, for scripts and tests.

Inside Slicer use ``slicer.mrmlScene``; outside (the ``slicer-core`` wheel, no application)
:func:`create_scene` gives a scene on which every function of this package works:
the Colors logic is registered first (display nodes need it), the Segmentations logic
registers the segmentation converter rules, and the subject hierarchy is maintained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import slicer


@dataclass
class HeadlessSlicer:
    scene: Any
    application_logic: Any
    colors_logic: Any
    volumes_logic: Any
    segmentations_logic: Any
    subject_hierarchy_logic: Any
    _slice_logics: list[Any] = field(default_factory=list)

    def load_volume(self, path: str, name: str, labelmap: bool = False) -> Any:
        """Read a NIfTI/NRRD volume with Slicer's own reader (``vtkSlicerVolumesLogic``)."""
        node = self.volumes_logic.AddArchetypeVolume(str(path), name, 1 if labelmap else 0)
        if node is None:
            raise OSError(f"{path}: Slicer could not read this volume")
        return node

    def slice_views(self) -> list[Any]:
        """Red (axial), Yellow (sagittal) and Green (coronal) slice nodes, created as Slicer's layout does."""
        found = [self.scene.GetNodeByID(f"vtkMRMLSliceNode{name}") for name in ("Red", "Yellow", "Green")]
        if all(found):
            return found
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        nodes = []
        for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.application_logic)
            logic.SetMRMLScene(self.scene)
            node = logic.AddSliceNode(name)
            node.SetDefaultOrientation(orientation)
            node.SetOrientation(orientation)
            self._slice_logics.append(logic)
            nodes.append(node)
        return nodes


def create_scene() -> HeadlessSlicer:
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)

    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colors)

    logics: dict[str, Any] = {}
    for module, cls in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(module, logic)
        logics[module] = logic
    return HeadlessSlicer(
        scene, application, colors, logics["Volumes"], logics["Segmentations"], logics["SubjectHierarchy"]
    )
