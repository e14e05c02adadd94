"""Training augmentation built from MONAI transforms, plus a left-right flip that swaps classes.

A sample is a dict of numpy arrays: ``image`` (C, k, j, i) float32, ``label`` (1, k, j, i) of
channel indices and ``weight`` (1, k, j, i) float32 (0 outside the volume and on unlabelled
voxels). Spatial transforms move all three (labels and weights with nearest-neighbour
interpolation, zero padding, so voxels pulled in from outside the volume get weight 0);
intensity transforms touch the image only.

The spatial transforms run on a crop larger than the patch (:func:`context_size`) and the
patch is its centre, so a rotation or a zoom-out does not bring empty corners into the patch.

Left-right flips: mirroring a head makes the left caudate look like a right caudate, so the
flip also swaps the classes of each ``left_right_pairs`` entry of the model card; otherwise
the network learns that left and right are interchangeable (seed 003's sagittal-plane failure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
)

from ..models.card import ModelCard

SPATIAL_KEYS = ("image", "label", "weight")


@dataclass
class AugmentationConfig:
    """Probabilities and ranges; a probability of 0 switches a transform off."""

    enabled: bool = True
    affine_prob: float = 0.3
    rotation_degrees: float = 15.0  # uniform in ±this, about each axis
    scale: tuple[float, float] = (0.85, 1.15)  # zoom factor range
    elastic_prob: float = 0.0  # off by default: slow on large patches on the CPU
    elastic_sigma: tuple[float, float] = (5.0, 8.0)  # voxels (smoothness of the displacement field)
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)  # MONAI's 3D magnitude units
    bias_field_prob: float = 0.15
    bias_field_coefficients: float = 0.3
    gamma_prob: float = 0.15
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.15
    noise_std: float = 0.05  # in normalized intensity units
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # voxels
    flip_lr_prob: float = 0.5  # only with a card whose left_right_pairs are complete; see docs

    @property
    def spatial(self) -> bool:
        return self.enabled and (self.affine_prob > 0 or self.elastic_prob > 0)


def lr_axis(orientation: str) -> int:
    """The spatial array axis (0..2 of (k, j, i)) that runs left-right in the card's orientation."""
    code = orientation.upper()
    for position, letter in enumerate(code):
        if letter in "LR":
            return 2 - position  # orientation letters name the (i, j, k) axes; arrays are (k, j, i)
    raise ValueError(f"orientation {orientation!r} has no left-right axis")


class RandLeftRightFlipd(RandomizableTransform, MapTransform):
    """Mirror along the left-right axis and swap the channel index of each left/right label pair.

    ``permutation[c]`` is the channel that channel ``c`` becomes (see
    :meth:`ModelCard.channel_swap_for_lr_flip`). Written here because MONAI's ``RandFlipd``
    flips arrays but knows nothing of paired classes.
    """

    def __init__(self, permutation: Sequence[int], axis: int, prob: float = 0.5, label_key: str = "label",
                 keys: Sequence[str] = SPATIAL_KEYS) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.lookup = np.asarray(permutation, dtype=np.int64)
        self.axis, self.label_key = axis, label_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        if not self._do_transform:
            return data
        return flip_left_right(data, self.lookup, self.axis, self.label_key, self.keys)


def flip_left_right(data: dict[str, Any], permutation: Sequence[int] | np.ndarray, axis: int,
                    label_key: str = "label", keys: Sequence[str] = SPATIAL_KEYS) -> dict[str, Any]:
    """Deterministic left-right flip of a sample dict (see :class:`RandLeftRightFlipd`)."""
    out = dict(data)
    lookup = np.asarray(permutation, dtype=np.int64)
    for key in keys:
        if key not in data:
            continue
        array = np.flip(_numpy(data[key]), axis=1 + axis)  # +1: the channel axis comes first
        if key == label_key:
            array = lookup[np.rint(array).astype(np.int64)].astype(np.float32)
        out[key] = np.ascontiguousarray(array)
    return out


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.as_tensor() if hasattr(value, "as_tensor") else value
        return tensor.detach().cpu().numpy()
    return np.asarray(value)


def context_size(patch_size: Sequence[int], config: AugmentationConfig) -> tuple[int, int, int]:
    """The crop to take around a patch centre so rotations and zoom-outs stay inside real data."""
    if not config.spatial:
        return tuple(int(s) for s in patch_size)  # type: ignore[return-value]
    angle = math.radians(min(abs(config.rotation_degrees), 45.0)) if config.affine_prob > 0 else 0.0
    reach = 1.0 / min(config.scale) if config.affine_prob > 0 else 1.0  # a zoom-out samples a wider region
    factor = min(1.5, (math.cos(angle) + math.sin(angle)) * max(reach, 1.0))
    sizes = []
    for s in patch_size:
        grown = int(math.ceil(s * factor))
        grown += (grown - s) % 2  # same parity: the centre crop is then exact
        sizes.append(grown)
    return tuple(sizes)  # type: ignore[return-value]


class Augmenter:
    """The full augmentation pipeline of one sample; deterministic given a seed.

    ``augmenter(sample, seed)`` takes a context-sized sample (see :func:`context_size`) and
    returns a patch-sized one. Each call reseeds every MONAI transform from ``seed``, so a
    sample depends only on (seed, input): that is what makes resume and multi-worker loading
    reproducible.
    """

    def __init__(self, config: AugmentationConfig, patch_size: Sequence[int], card: ModelCard | None = None) -> None:
        self.config = config
        self.patch_size = tuple(int(s) for s in patch_size)
        c = config
        spatial: list[Any] = []
        intensity: list[Any] = []
        modes = ("bilinear", "nearest", "nearest")
        if c.enabled and c.affine_prob > 0:
            rotation = math.radians(c.rotation_degrees)
            scale = (1.0 / c.scale[1] - 1.0, 1.0 / c.scale[0] - 1.0)  # MONAI scales the sampling grid
            spatial.append(RandAffined(SPATIAL_KEYS, prob=c.affine_prob, rotate_range=(rotation,) * 3,
                                       scale_range=(scale,) * 3, mode=modes, padding_mode="zeros",
                                       allow_missing_keys=True))
        if c.enabled and c.elastic_prob > 0:
            spatial.append(Rand3DElasticd(SPATIAL_KEYS, sigma_range=tuple(c.elastic_sigma),
                                          magnitude_range=tuple(c.elastic_magnitude), prob=c.elastic_prob,
                                          mode=modes, padding_mode="zeros", allow_missing_keys=True))
        spatial.append(CenterSpatialCropd(SPATIAL_KEYS, roi_size=self.patch_size, allow_missing_keys=True))
        if c.enabled and c.bias_field_prob > 0:
            intensity.append(RandBiasFieldd("image", coeff_range=(0.0, c.bias_field_coefficients),
                                            prob=c.bias_field_prob))
        if c.enabled and c.gamma_prob > 0:
            intensity.append(RandAdjustContrastd("image", prob=c.gamma_prob, gamma=tuple(c.gamma), retain_stats=True))
        if c.enabled and c.noise_prob > 0:
            intensity.append(RandGaussianNoised("image", prob=c.noise_prob, std=c.noise_std))
        if c.enabled and c.blur_prob > 0:
            sigma = tuple(c.blur_sigma)
            intensity.append(RandGaussianSmoothd("image", sigma_x=sigma, sigma_y=sigma, sigma_z=sigma,
                                                 prob=c.blur_prob))
        if c.enabled and c.flip_lr_prob > 0 and card is not None:
            intensity.append(RandLeftRightFlipd(card.channel_swap_for_lr_flip(), lr_axis(card.orientation),
                                                prob=c.flip_lr_prob))
        self.pipeline = Compose(spatial + intensity)

    def __call__(self, sample: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
        self.pipeline.set_random_state(seed=int(seed) % (2**32))
        out = self.pipeline({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sample.items()})
        result = {key: _numpy(value).astype(np.float32, copy=False) for key, value in out.items()}
        result["label"] = np.rint(result["label"])
        return result
