"""Segmentation metrics: overlap, surface distances, per-class evaluation and HTML reports.

Typical use (the Slicer module and the command line do exactly this)::

    from MedSegExtension.metrics import evaluate_images
    result = evaluate_images(prediction_image, reference_image, {1: "Liver", 2: "Spleen"})
    result.classes          # per-class rows (ClassResult)
    result.averages         # {"all": {...}, "foreground": {...}}
    result.confusion        # [reference class, predicted class] voxel counts
    result.to_json("metrics.json"); result.to_csv("metrics.csv")

For the HTML page keep the prepared pair the numbers came from::

    from MedSegExtension.metrics import prepare_label_maps, evaluate_label_pair
    from MedSegExtension.metrics.report import write_report  # imports matplotlib (Agg)
    pair = prepare_label_maps(prediction_image, reference_image, names)
    result = evaluate_label_pair(pair, progress=callback, cancel=token)
    write_report(folder, result, pair, image=intensity_image)

Batches: ``evaluate_folders`` → :class:`BatchResult` (per case, and mean / median / IQR).

Modules, lowest first: :mod:`.overlap`, :mod:`.surface` (the metrics), :mod:`.label_maps`
(reading, the label-map check, grid alignment), :mod:`.names` (segment name matching),
:mod:`.pairs` (a prepared prediction/reference pair), :mod:`.results`, :mod:`.statistics`,
:mod:`.formats` (JSON/CSV/table text), :mod:`.evaluation` (one case), :mod:`.batch` (folders),
:mod:`.report` (HTML).
"""

from .batch import BatchResult, evaluate_folders, match_cases
from .evaluation import EvaluationResult, evaluate_files, evaluate_images, evaluate_label_pair
from .label_maps import LabelMap, read_label_map
from .overlap import OverlapMetrics, confusion_matrix, overlap_from_counts, overlap_metrics
from .pairs import LabelPair, prepare_label_maps, read_label_pair
from .results import ClassResult
from .statistics import SummaryStats, summarize
from .surface import SurfaceMetrics, surface_distances, surface_metrics

__all__ = [
    "BatchResult",
    "ClassResult",
    "EvaluationResult",
    "LabelMap",
    "LabelPair",
    "OverlapMetrics",
    "SummaryStats",
    "SurfaceMetrics",
    "confusion_matrix",
    "evaluate_files",
    "evaluate_folders",
    "evaluate_images",
    "evaluate_label_pair",
    "match_cases",
    "overlap_from_counts",
    "overlap_metrics",
    "prepare_label_maps",
    "read_label_map",
    "read_label_pair",
    "summarize",
    "surface_distances",
    "surface_metrics",
]
