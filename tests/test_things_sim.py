"""Simulated THINGS-EEG2: the simulator writes the data set's layout (read back by load_things_eeg2 unchanged),
its test concepts are never trained on, and the zero-shot protocol trains and evaluates on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuroimagen.data import load_things_eeg2
from neuroimagen.data.things_sim import (
    THINGS_CHANNELS,
    emoji_concepts,
    mvnn_whitener,
    simulate_things,
    split_concepts,
)

SCALE = dict(train_concepts=24, images_per_concept=2, train_reps=2, test_concepts=12, test_reps=6)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("things_sim")
    simulate_things(out, preset="demo", subjects="1-2", seed=0, size=32, **SCALE)
    return out


def test_simulated_files_have_the_official_layout(sim_dir):
    for s in (1, 2):
        train = load_things_eeg2(sim_dir, s, "training")
        test = load_things_eeg2(sim_dir, s, "test")
        assert train.data.shape == (24 * 2, 2, 17, 100) and test.data.shape == (12, 6, 17, 100)
        assert train.data.dtype == np.float64 and train.ch_names == list(THINGS_CHANNELS)
        assert train.sfreq == 100.0 and train.tmin == pytest.approx(-0.2) and train.times[-1] == pytest.approx(0.79)
        # raw np.load, as the peers read the files: a dict with the three keys
        d = np.load(sim_dir / f"sub-{s:02d}" / "preprocessed_eeg_test.npy", allow_pickle=True).item()
        assert set(d) == {"preprocessed_eeg_data", "ch_names", "times"}
    # image metadata: THINGS-style folders and files, one per row; the images exist where image_path says
    assert train.image_concepts[0].startswith("00001_") and train.image_files[0].endswith("_01s.jpg")
    assert train.image_concepts[2].startswith("00002_")  # 2 images per concept
    for ds in (train, test):
        for i in (0, ds.n_images - 1):
            assert ds.image_path(i, sim_dir).is_file()
    meta = json.loads((sim_dir / "simulation.json").read_text())
    assert meta["preset"] == "demo" and meta["test_reps"] == 6 and meta["subjects"] == [1, 2]


def test_whitened_and_baseline_corrected(sim_dir):
    train = load_things_eeg2(sim_dir, 1, "training")
    x = train.eeg
    assert np.abs(x[..., :20].mean(axis=-1)).max() < 1e-6  # baseline: mean 0 over -0.2..0 s per trial
    cov = np.einsum("nct,ndt->cd", x - x.mean(-1, keepdims=True), x - x.mean(-1, keepdims=True)) / (len(x) * 99)
    np.testing.assert_allclose(cov, np.eye(17), atol=1e-6)  # MVNN on the training split: identity covariance
    assert not np.allclose(load_things_eeg2(sim_dir, 2, "training").data, train.data)  # subjects differ


def test_test_concepts_are_never_trained_on(sim_dir):
    train = load_things_eeg2(sim_dir, 1, "training")
    test = load_things_eeg2(sim_dir, 1, "test")
    assert set(train.concept_names).isdisjoint(test.concept_names)
    assert len(set(test.concept_names)) == 12 and len(set(train.concept_names)) == 24
    # the full-size split exists and is disjoint too (the real data set: 1654 training + 200 test concepts)
    tr, te = split_concepts(1654, 200, seed=0)
    assert len({c.name for c in tr}) == 1654 and {c.name for c in tr}.isdisjoint(c.name for c in te)
    assert len(emoji_concepts()) >= 1854
    with pytest.raises(ValueError, match="at most"):
        split_concepts(len(emoji_concepts()), 1)


def test_concept_code_follows_the_name_embedding(sim_dir):
    """The averaged test response of a concept is its name's code: a concept's code depends on its name only."""
    from neuroimagen.data.caps import cap_info
    from neuroimagen.data.simulate import EEGSimulator
    from neuroimagen.data.things_sim import THINGS_CAP, catalogue_embeddings

    sim = EEGSimulator("demo", n_subjects=0, montage=cap_info(THINGS_CAP, THINGS_CHANNELS))
    names, ref = catalogue_embeddings()
    a = sim.concept_code(ref[:5], ref)
    b = sim.concept_code(ref[[3, 0]], ref)
    np.testing.assert_allclose(b, a[[3, 0]])
    assert a.shape == (5, 8, 3) and not np.allclose(a[0], a[1])
    with pytest.raises(ValueError, match="either class_indices"):
        sim.simulate(np.zeros((1, 8, 8, 3), np.uint8), [0], [1], np.random.default_rng(0), codes=a[:1])


def test_mvnn_whitener_whitens():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((4, 4))
    x = np.einsum("cd,ndt->nct", mix, rng.standard_normal((300, 4, 50)))
    w = mvnn_whitener(x)
    y = np.einsum("cd,ndt->nct", w, x)
    y = y - y.mean(-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nct,ndt->cd", y, y) / (300 * 49), np.eye(4), atol=1e-8)
