"""Channel-subset augmentation (training.augment): a trial as a smaller cap gives it, read back to 128."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_eeg

from neuroimagen.data import EEGTrial, preprocess
from neuroimagen.data.preprocessing import standardize


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from neuroimagen.training.augment import CapAugment

    return CapAugment(1.0, n_random=2, seed=0, cache_dir=tmp_path_factory.mktemp("aug"))


def test_a_standard_cap_matrix_is_what_preprocess_does_with_that_cap(pool, model_names):
    """The 10-20 19 matrix: the 128 channels interpolated to the cap's electrodes, then read back as preprocess
    reads a 19-channel file. Applied to a trial it gives (nearly) the model input of that file."""
    from neuroimagen.data.caps import standard_caps
    from neuroimagen.data.channels import _model_positions, spline_weights

    caps = [(n, i) for n, i in standard_caps() if len(i.ch_names) < 128]
    k, (name, info) = next((k, c) for k, c in enumerate(caps) if c[0] == "10-20 19")
    rough = smooth_eeg() + 5e-6 * np.random.default_rng(0).standard_normal((128, 500))  # not all smooth in space
    full = preprocess(EEGTrial(rough, 1000.0, model_names)).data
    mixed = standardize(pool.mats[k].numpy() @ full)
    cap_pos = np.array([ch["loc"][:3] for ch in info["chs"]])
    model_pos = np.array([_model_positions()[m] for m in model_names])
    on_cap = spline_weights(model_pos, cap_pos) @ rough  # the field at the cap's electrodes
    via_file = preprocess(EEGTrial(on_cap, 1000.0, list(info.ch_names))).data
    assert np.corrcoef(mixed.ravel(), via_file.ravel())[0, 1] > 0.99
    assert np.abs(mixed - full).max() > 0.5  # and it did change the trial


def test_augment_draws_per_trial_and_keeps_the_model_space(pool, model_names):
    from neuroimagen.training.augment import CapAugment

    x = torch.from_numpy(np.stack([preprocess(EEGTrial(smooth_eeg(seed=s), 1000.0, model_names)).data
                                   for s in range(4)]))
    g = torch.Generator().manual_seed(0)
    out = pool(x, g)
    assert out.shape == x.shape and not torch.equal(out, x)
    np.testing.assert_allclose(out.mean(-1).numpy(), 0, atol=1e-5)  # standardized again
    np.testing.assert_allclose(out.std(dim=(1, 2), unbiased=False).numpy(), 1, atol=1e-4)
    assert torch.equal(CapAugment(0.0)(x, g), x)  # p = 0: untouched
    assert len(pool.mats) == 5 + 2  # five smaller standard caps and two random subsets
