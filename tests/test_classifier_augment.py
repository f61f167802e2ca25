"""The evaluation classifier's augmentation: seeded, off by default, and each robustness option does what it says."""

import numpy as np
import pytest
import torch

from neuroimagen.training.classifier import (
    DEGRADATIONS,
    Config,
    add_noise,
    augment,
    down_up,
    gaussian_blur,
    jpeg,
    validation_score,
)


def _images(n: int = 8, side: int = 32) -> torch.Tensor:
    """Sharp images in [-1, 1]: a checkerboard of 2-px squares under a coloured gradient, one shift per image."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    out = []
    for i in range(n):
        board = (((yy + i) // 2 + xx // 2) % 2).float() * 1.2 - 0.6
        out.append(torch.stack([board + 0.3 * xx / side, board - 0.2 * yy / side, board * 0.5]))
    return torch.stack(out).clamp(-1, 1)


def _high_frequency_energy(x: torch.Tensor) -> float:
    """Mean squared difference between neighbouring pixels."""
    return float((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean())


ROBUST = Config(crop_scale=0.7, colour=0.25, blur_sigma=2.5, min_side=8, jpeg_quality=15, noise_std=0.25,
                degrade_prob=0.5)


def test_defaults_keep_todays_augmentation():
    """Config() draws exactly what augment(x, g) drew before the options existed (the shipped numbers reproduce)."""
    x = _images()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3), Config())
    assert torch.equal(a, b)
    # ... and leaves the generator where the old code did: five draws (flip, shift, contrast, brightness, blur).
    g = torch.Generator().manual_seed(3)
    augment(x, g, Config())
    h = torch.Generator().manual_seed(3)
    for shape in ((8,), (8, 2), (8, 1, 1, 1), (8, 1, 1, 1), (8,)):
        torch.rand(shape, generator=h)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=h))


@pytest.mark.parametrize("option", ["crop_scale", "colour", "blur_sigma", "min_side", "jpeg_quality", "noise_std"])
def test_each_option_is_seeded_and_changes_the_images(option):
    x = _images()
    cfg = Config(**{option: getattr(ROBUST, option)}, degrade_prob=1.0)
    a = augment(x, torch.Generator().manual_seed(0), cfg)
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(0), cfg))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(1), cfg))
    assert not torch.allclose(a, augment(x, torch.Generator().manual_seed(0)))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1


def test_blur_and_down_up_lower_high_frequencies_and_noise_raises_them():
    x = _images()
    e = _high_frequency_energy(x)
    assert _high_frequency_energy(gaussian_blur(x, 1.0)) < 0.5 * e
    assert _high_frequency_energy(gaussian_blur(x, 2.0)) < _high_frequency_energy(gaussian_blur(x, 1.0))
    assert _high_frequency_energy(down_up(x, 8)) < 0.5 * e
    assert _high_frequency_energy(add_noise(x, 0.3, torch.Generator().manual_seed(0))) > e
    # A blur keeps the mean colour; one sigma per image blurs each as much as asked.
    assert torch.allclose(gaussian_blur(x, 2.0).mean((2, 3)), x.mean((2, 3)), atol=0.02)
    per_image = gaussian_blur(x[:2], torch.tensor([0.0, 2.0]))
    assert torch.allclose(per_image[0], x[0], atol=1e-4)
    assert torch.allclose(per_image[1], gaussian_blur(x[1:2], 2.0)[0], atol=1e-5)


def test_blur_augmentation_lowers_high_frequency_energy_on_average():
    x = _images(32)
    plain = augment(x, torch.Generator().manual_seed(0), Config(degrade_prob=1.0))
    blurred = augment(x, torch.Generator().manual_seed(0), Config(blur_sigma=2.5, degrade_prob=1.0))
    assert _high_frequency_energy(blurred) < 0.7 * _high_frequency_energy(plain)


def test_jpeg_loses_more_at_low_quality():
    x = _images()
    err = {q: float((jpeg(x, q) - x).abs().mean()) for q in (10, 90)}
    assert 0 < err[90] < err[10]


def test_degradations_and_the_degraded_validation_score():
    x = _images(side=64)  # the stimuli's size: down-up 32 px halves it
    g = torch.Generator().manual_seed(0)
    for name, f in DEGRADATIONS.items():
        y = f(x, g)
        assert y.shape == x.shape and not torch.equal(y, x) and y.abs().max() <= 1, name

    class Constant(torch.nn.Module):  # right on the first half of the images, whatever they look like
        def forward(self, images):
            return torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), 2).float()

    y = torch.tensor([0, 1] * 4)
    assert validation_score(Constant(), x, y, degraded=False) == 0.5
    assert validation_score(Constant(), x, y, degraded=True) == 0.5
    assert np.isclose(validation_score(Constant(), x, torch.zeros(8, dtype=torch.long), degraded=True), 1.0)
