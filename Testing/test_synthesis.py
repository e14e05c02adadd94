"""SynthSeg-style label-to-image synthesis: intensities, corruptions, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from MedSegExtension.errors import InputError
from MedSegExtension.training.synthesis import PRESETS, LabelToImageSynthesizer

CLEAN = {  # no corruption: the image is exactly the per-label means
    "std_range": [0.0, 0.0],
    "bias_field": {"probability": 0.0},
    "resolution": {"probability": 0.0},
    "blur_sigma_mm": [0.0, 0.0],
    "noise": {"probability": 0.0},
    "gamma": {"probability": 0.0},
    "random_background_probability": 0.0,
}


def head_labels(shape: tuple[int, int, int] = (40, 44, 48)) -> np.ndarray:
    """Nested shells like a head: scalp 32, skull 30, CSF 22, cortex 21, WM 20, two deep nuclei 1 and 2."""
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(i**2 + j**2 + k**2)
    labels = np.zeros(shape, np.uint8)
    for radius, value in ((0.95, 32), (0.85, 30), (0.75, 22), (0.7, 21), (0.55, 20)):
        labels[r < radius] = value
    labels[((i - 0.2) ** 2 + j**2 + k**2) < 0.02] = 1
    labels[((i + 0.2) ** 2 + j**2 + k**2) < 0.02] = 2
    return labels


def test_output_shape_type_and_determinism() -> None:
    labels = head_labels()
    synth = LabelToImageSynthesizer(seed=0)
    a = synth(labels, np.random.default_rng(7))
    b = LabelToImageSynthesizer(seed=0)(labels, np.random.default_rng(7))
    c = synth(labels, np.random.default_rng(8))
    assert a.shape == labels.shape and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_random_mode_gives_each_label_one_intensity() -> None:
    labels = head_labels()
    synth = LabelToImageSynthesizer({**CLEAN, "preset_probability": 0.0})
    means = []
    for seed in range(3):
        image = synth(labels, np.random.default_rng(seed))
        per_label = {int(v): image[labels == v] for v in np.unique(labels)}
        assert all(np.ptp(values) < 1e-5 for values in per_label.values())
        means.append([float(values[0]) for values in per_label.values()])
        assert len({round(m, 5) for m in means[-1]}) == len(per_label)  # every label its own intensity
    assert not np.allclose(means[0], means[1])  # contrast changes from image to image


@pytest.mark.parametrize("preset", ["t1", "t2", "ct"])
def test_presets_order_tissues_like_real_scans(preset: str) -> None:
    labels = head_labels()
    synth = LabelToImageSynthesizer({**CLEAN, "preset_probability": 1.0, "presets": {preset: 1.0}})
    for seed in range(3):
        image = synth(labels, np.random.default_rng(seed))
        wm, gm, csf, bone = (float(np.median(image[labels == v])) for v in (20, 21, 22, 30))
        if preset == "t1":
            assert wm > gm > csf
        elif preset == "t2":
            assert csf > gm > wm
        else:  # Hounsfield units
            assert bone > 900 and -10 < csf < 25 and 15 < wm < gm < 60
            assert float(image[0, 0, 0]) == PRESETS["ct"]["background"]


def test_bias_field_is_smooth_and_multiplicative() -> None:
    labels = np.full((32, 32, 32), 20, np.uint8)
    config = {**CLEAN, "preset_probability": 1.0, "presets": {"t1": 1.0},
              "bias_field": {"probability": 1.0, "coeff_range": [0.08, 0.08]}}
    image = LabelToImageSynthesizer(config, seed=1)(labels, np.random.default_rng(0))
    assert np.ptp(image) > 0.05  # the uniform label became non-uniform
    # smooth: neighbouring voxels differ far less than the whole-image spread (white noise would not)
    steps = np.abs(np.diff(image, axis=2))
    assert steps.max() < 0.25 * np.ptp(image) and steps.mean() < 0.05 * np.ptp(image)


def test_resolution_simulation_blurs_edges() -> None:
    labels = head_labels((48, 48, 48))
    base = {**CLEAN, "preset_probability": 1.0, "presets": {"t1": 1.0}, "spacing": [1.0, 1.0, 1.0]}
    sharp = LabelToImageSynthesizer(base)(labels, np.random.default_rng(0))
    blurred = LabelToImageSynthesizer({**base, "resolution": {"probability": 1.0, "thick_mm": [6.0, 6.0],
                                                              "inplane_mm": [3.0, 3.0]}})(labels, np.random.default_rng(0))

    def edge_energy(image: np.ndarray) -> float:
        return float(sum(np.abs(np.diff(image, axis=a)).max() for a in range(3)))

    assert edge_energy(blurred) < 0.7 * edge_energy(sharp)
    # partial volume: intermediate values appear between the tissues' means
    assert len(np.unique(np.round(blurred, 3))) > 10 * len(np.unique(np.round(sharp, 3)))


def test_full_default_pipeline_adds_texture_within_a_label() -> None:
    """Speed is a benchmark matter (the brief: no timed unit tests); this checks what the pipeline makes."""
    labels = head_labels((64, 64, 64))
    synth = LabelToImageSynthesizer(seed=3)
    images = [synth(labels, np.random.default_rng(s)) for s in range(4)]
    # default pipeline adds texture: a single label is not constant any more
    assert all(np.std(image[labels == 20]) > 0 for image in images)


def test_bad_input_raises_one_line_errors() -> None:
    synth = LabelToImageSynthesizer()
    with pytest.raises(InputError, match="3D"):
        synth(np.zeros((4, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(InputError, match="integers"):
        synth(np.zeros((4, 4, 4), np.float32), np.random.default_rng(0))
    with pytest.raises(InputError, match="unknown key 'noize'"):
        LabelToImageSynthesizer({"noize": {}})
    with pytest.raises(InputError, match="preset 'mri'"):
        LabelToImageSynthesizer({"presets": {"mri": 1.0}})
    with pytest.raises(InputError, match="spacing"):
        LabelToImageSynthesizer({"spacing": [1.0, 0.0, 1.0]})
