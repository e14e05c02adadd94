"""Label-to-image synthesis after SynthSeg (Billot et al., Medical Image Analysis 86, 2023).

A training image is drawn from a label map: each label gets a random Gaussian intensity (mean and
spread), then the image is corrupted like a real acquisition -- a smooth multiplicative bias field,
a random acquisition resolution (thick slices along one random axis: blur, sample, resample back =
partial-volume effect), extra blur, noise and a gamma contrast change. A network trained on such
images never sees one contrast twice, so it learns shape, not intensity, and segments MRI of any
contrast and CT.

Two ways to draw the intensities, chosen per image:

- ``random`` (SynthSeg proper): every label an independent mean in ``mean_range``;
- a contrast preset (``t1``, ``t2``, ``flair``, ``pd``, ``ct``) with jitter: labels of one tissue
  (``tissues``: label -> tissue name) share a typical intensity, so the data also covers the contrasts
  the model will really meet. ``ct`` produces Hounsfield units and skips bias field and gamma.

The defaults know the generation labels of :mod:`MedSegExtension.datasets.labels`; other label sets
work too (unknown labels draw random intensities in presets).

Arrays are (k, j, i); ``spacing`` in the config is (x, y, z) mm of the label arrays handed in.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from monai.transforms import AdjustContrast, GaussianSmooth, RandBiasField
from scipy import ndimage

from ..errors import InputError

# Typical relative intensities per tissue (0..1 scale for MR, HU for CT).
PRESETS: dict[str, dict[str, float]] = {
    "t1": {"background": 0.0, "csf": 0.15, "gm": 0.48, "deep_gm": 0.58, "wm": 0.78, "bone": 0.05,
           "marrow": 0.55, "fat": 0.95, "soft": 0.45},
    "t2": {"background": 0.0, "csf": 1.0, "gm": 0.55, "deep_gm": 0.45, "wm": 0.35, "bone": 0.04,
           "marrow": 0.45, "fat": 0.7, "soft": 0.4},
    "flair": {"background": 0.0, "csf": 0.08, "gm": 0.62, "deep_gm": 0.55, "wm": 0.45, "bone": 0.04,
              "marrow": 0.5, "fat": 0.75, "soft": 0.45},
    "pd": {"background": 0.0, "csf": 0.85, "gm": 0.72, "deep_gm": 0.66, "wm": 0.56, "bone": 0.05,
           "marrow": 0.6, "fat": 0.85, "soft": 0.55},
    "ct": {"background": -1000.0, "csf": 8.0, "gm": 40.0, "deep_gm": 38.0, "wm": 27.0, "bone": 1300.0,
           "marrow": 450.0, "fat": -90.0, "soft": 45.0},
}

# Generation labels (MedSegExtension.datasets.labels) -> tissue.
DEFAULT_TISSUES: dict[int, str] = {
    0: "background",
    1: "deep_gm", 2: "deep_gm", 3: "deep_gm", 4: "deep_gm",  # caudate, lentiform
    5: "gm", 6: "gm",  # insula
    7: "deep_gm", 8: "deep_gm",  # thalamus
    9: "gm", 10: "gm",  # hippocampus
    20: "wm", 21: "gm", 22: "csf", 23: "csf", 24: "gm", 25: "deep_gm", 26: "wm", 27: "gm",
    30: "bone", 31: "marrow", 32: "soft", 33: "fat",
}

DEFAULT_CONFIG: dict[str, Any] = {
    "spacing": [1.5, 1.5, 1.5],  # mm (x, y, z) of the label arrays passed in
    "preset_probability": 0.5,  # else fully random per-label means (SynthSeg)
    "presets": {"t1": 0.35, "t2": 0.2, "flair": 0.1, "pd": 0.1, "ct": 0.25},
    "tissues": DEFAULT_TISSUES,
    "mean_range": [0.0, 1.0],  # random mode, MR scale
    "mean_jitter": 0.08,  # preset mode: additive jitter (fraction of the preset's range) per label
    "std_range": [0.0, 0.05],  # within-label spread (fraction of range), before blur
    "random_background_probability": 0.15,  # background gets a random intensity too
    "bias_field": {"probability": 0.8, "degree": 3, "coeff_range": [0.0, 0.1]},
    "resolution": {"probability": 0.75, "thick_mm": [1.0, 6.0], "inplane_mm": [0.8, 2.0]},
    "blur_sigma_mm": [0.0, 0.8],
    "noise": {"probability": 0.9, "std_range": [0.0, 0.04]},  # fraction of range
    "gamma": {"probability": 0.8, "log_std": 0.3},
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise InputError(f"synthesis config: unknown key {key!r} (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and isinstance(value, dict) and key != "tissues" and key != "presets":
            out[key] = _merge(base[key], value)
        else:
            out[key] = value
    return out


class LabelToImageSynthesizer:
    """Draw a random image from an integer label map (SynthSeg-style); see the module docstring.

    ``config`` overrides :data:`DEFAULT_CONFIG` key by key; ``seed`` seeds MONAI's internal random
    state once (each call draws its parameters from the ``rng`` it is given).
    """

    def __init__(self, config: dict | None = None, seed: int | None = None) -> None:
        self.config = _merge(DEFAULT_CONFIG, dict(config or {}))
        cfg = self.config
        self.tissues = {int(k): str(v) for k, v in cfg["tissues"].items()}
        self.presets = {str(k): float(v) for k, v in cfg["presets"].items() if float(v) > 0}
        for name in self.presets:
            if name not in PRESETS:
                raise InputError(f"synthesis config: unknown contrast preset {name!r} (known: {', '.join(PRESETS)})")
        self.spacing_zyx = np.asarray(cfg["spacing"], dtype=float)[::-1]
        if self.spacing_zyx.shape != (3,) or (self.spacing_zyx <= 0).any():
            raise InputError(f"synthesis config: spacing must be three positive numbers, got {cfg['spacing']}")
        bias = cfg["bias_field"]
        self._bias = RandBiasField(degree=int(bias["degree"]), coeff_range=tuple(bias["coeff_range"]), prob=1.0)
        if seed is not None:
            self._bias.set_random_state(seed=int(seed) % (2**32))

    # -- intensities -------------------------------------------------------------------------------
    def _means_and_stds(self, values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str | None]:
        cfg = self.config
        preset = None
        if self.presets and rng.random() < float(cfg["preset_probability"]):
            names = list(self.presets)
            weights = np.array([self.presets[n] for n in names])
            preset = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        lo, hi = (float(x) for x in cfg["mean_range"])
        if preset is None:
            means = rng.uniform(lo, hi, size=len(values))
            scale = hi - lo
        elif preset == "ct":
            means = self._ct_means(values, rng)
            scale = 30.0  # HU: the within-label spread is drawn on this scale
        else:
            table = PRESETS[preset]
            jitter = {name: float(rng.normal(0.0, cfg["mean_jitter"])) for name in table}  # shared per tissue
            means = np.array([
                table[t] + jitter[t] + rng.normal(0.0, 0.3 * cfg["mean_jitter"]) if (t := self.tissues.get(int(v))) in table
                else rng.uniform(lo, hi)
                for v in values
            ])
            scale = 1.0
        s_lo, s_hi = (float(x) for x in cfg["std_range"])
        stds = rng.uniform(s_lo, s_hi, size=len(values)) * scale
        if preset != "ct":
            means = np.clip(means, 0.0, None)
        if 0 in values and rng.random() >= float(cfg["random_background_probability"]):
            zero = int(np.flatnonzero(values == 0)[0])
            means[zero] = PRESETS[preset]["background"] if preset else 0.0
            stds[zero] = 0.0
        return means, stds, preset

    def _ct_means(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Hounsfield units: brain tissues jittered by a few HU (they differ by ~10), others by more."""
        table = PRESETS["ct"]
        shift = float(rng.normal(0.0, 3.0))  # scanner calibration offset shared by soft tissues
        means = np.empty(len(values))
        for index, value in enumerate(values):
            tissue = self.tissues.get(int(value))
            if tissue not in table:
                means[index] = rng.uniform(-100.0, 100.0)
            elif tissue in ("gm", "deep_gm", "wm", "csf", "soft"):
                means[index] = table[tissue] + shift + rng.normal(0.0, 3.0)
            else:
                means[index] = table[tissue] * rng.uniform(0.8, 1.2)
        return means

    # -- corruption --------------------------------------------------------------------------------
    def _resolution(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config["resolution"]
        if rng.random() >= float(cfg["probability"]):
            return image
        target = rng.uniform(*cfg["inplane_mm"], size=3)
        target[int(rng.integers(3))] = rng.uniform(*cfg["thick_mm"])  # thick-slice axis
        target = np.maximum(target, self.spacing_zyx)
        ratio = target / self.spacing_zyx
        if np.all(ratio < 1.05):
            return image
        sigma = np.where(ratio > 1.0, 0.42 * ratio, 0.0)  # FWHM ~ slice thickness (partial volume)
        blurred = self._smooth(image, sigma)
        low_shape = np.maximum(2, np.round(np.array(image.shape) / ratio)).astype(int)
        low = ndimage.zoom(blurred, low_shape / np.array(image.shape), order=1, mode="nearest", grid_mode=True)
        back = ndimage.zoom(low, np.array(image.shape) / np.array(low.shape), order=1, mode="nearest", grid_mode=True)
        return back[tuple(slice(0, n) for n in image.shape)].astype(np.float32)

    @staticmethod
    def _smooth(image: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
        if np.all(np.asarray(sigma_vox) <= 0.05):
            return image
        smooth = GaussianSmooth(sigma=[float(max(s, 1e-3)) for s in sigma_vox])
        out = smooth(torch.from_numpy(np.ascontiguousarray(image[None])))
        return np.asarray(out)[0].astype(np.float32)

    def __call__(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A synthetic image (k, j, i) float32 with the shape of ``labels`` (k, j, i) integers."""
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise InputError(f"label-to-image synthesis: expected a 3D (k, j, i) label array, got shape {labels.shape}")
        if labels.dtype.kind not in "iub":
            raise InputError(f"label-to-image synthesis: labels must be integers, got {labels.dtype}")
        cfg = self.config
        values, inverse = np.unique(labels, return_inverse=True)
        means, stds, preset = self._means_and_stds(values, rng)
        inverse = inverse.reshape(labels.shape)
        image = (means[inverse] + stds[inverse] * rng.standard_normal(labels.shape)).astype(np.float32)
        is_ct = preset == "ct"
        if not is_ct and rng.random() < float(cfg["bias_field"]["probability"]):
            self._bias.set_random_state(seed=int(rng.integers(2**31)))
            field_input = np.ones((1, *labels.shape), np.float32)
            field = np.asarray(self._bias(field_input))[0]
            image = image * field.astype(np.float32)
        image = self._resolution(image, rng)
        blur_mm = rng.uniform(*cfg["blur_sigma_mm"])
        image = self._smooth(image, np.full(3, blur_mm) / self.spacing_zyx)
        span = float(np.percentile(image, 99.5) - np.percentile(image, 0.5)) or 1.0
        if rng.random() < float(cfg["noise"]["probability"]):
            noise_std = rng.uniform(*cfg["noise"]["std_range"]) * (span if not is_ct else 300.0)
            image = image + rng.normal(0.0, noise_std, size=image.shape).astype(np.float32)
        if not is_ct:
            low, high = float(image.min()), float(image.max())
            image = (image - low) / max(high - low, 1e-6)
            if rng.random() < float(cfg["gamma"]["probability"]):
                gamma = float(np.exp(rng.normal(0.0, float(cfg["gamma"]["log_std"]))))
                image = np.asarray(AdjustContrast(gamma)(torch.from_numpy(image[None])))[0]
        return np.ascontiguousarray(image, dtype=np.float32)
