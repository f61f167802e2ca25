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

SCALE = dict(train_concepts=60, images_per_concept=2, train_reps=2, test_concepts=40, test_reps=4)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("things_sim")
    simulate_things(out, preset="demo", subjects="1-2", seed=0, size=32, **SCALE)
    return out


def test_simulated_files_have_the_official_layout(sim_dir):
    for s in (1, 2):
        train = load_things_eeg2(sim_dir, s, "training")
        test = load_things_eeg2(sim_dir, s, "test")
        assert train.data.shape == (60 * 2, 2, 17, 100) and test.data.shape == (40, 4, 17, 100)
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
    assert meta["preset"] == "demo" and meta["test_reps"] == 4 and meta["subjects"] == [1, 2]
    assert meta["preset_values"]["ventral_uv"] == 5.0  # the demo preset's, recorded with the data


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
    assert len(set(test.concept_names)) == 40 and len(set(train.concept_names)) == 60
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


# ------------------------------------------------------------------------------------------------ the protocol
def test_tiny_things_run_trains_and_identifies_unseen_concepts(sim_dir, tmp_path):
    """The CLI on the simulated folder: both settings, well above chance on concepts never trained on, a report
    that names the embedding space and the simulation it ran on."""
    from neuroimagen.evaluation.zero_shot import main

    assert main(["--data", str(sim_dir), "--subjects", "1-2", "--out", str(tmp_path), "--epochs", "30"]) == 0
    report = json.loads((tmp_path / "zero_shot.json").read_text())
    assert "MiniLM" in report["protocol"]["embedding_space"]
    assert report["data"]["simulated"] and report["data"]["simulation"]["preset"] == "demo"
    for mode in ("intra", "loso"):
        r = report["results"][mode]
        assert set(r["per_subject"]) == {"1", "2"}
        assert all(v["n_way"] == 40 and v["n_test"] == 40 for v in r["per_subject"].values())
        assert r["mean"]["top1"] >= 4 * 2.5 and r["mean"]["top5"] >= 2 * 12.5  # chance: 2.5 % / 12.5 % (40-way)
    md = (tmp_path / "zero_shot.md").read_text()
    assert "simulated data (preset `demo`" in md and "| NICE | 15.6 | 42.8 |" in md


def test_shuffled_training_labels_give_chance(sim_dir):
    from neuroimagen.evaluation.zero_shot import ZeroShotConfig, run_protocol

    r = run_protocol(sim_dir, [1, 2], ("intra", "loso"), ZeroShotConfig(epochs=30), shuffle_labels=True)
    top1 = np.mean([r[m]["mean"]["top1"] for m in r])
    top5 = np.mean([r[m]["mean"]["top5"] for m in r])
    assert top1 < 7.5 and top5 < 22  # 160 identifications: chance 2.5 % (sd 1.2) and 12.5 % (sd 2.6)


def test_identification_metric_is_at_chance_for_random_embeddings():
    import torch

    from neuroimagen.evaluation.zero_shot import identify

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 3, 5)).astype(np.float32)
    cand = rng.standard_normal((200, 15))
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)  # unit vectors, as the embeddings
    r = identify(lambda t: torch.from_numpy(rng.standard_normal((len(t), 15))), x, cand, rng.integers(0, 200, 4000))
    assert abs(r["top1"] - 0.5) < 0.4 and abs(r["top5"] - 2.5) < 0.8 and r["n_way"] == 200
    r = identify(lambda t: torch.from_numpy(cand[:40]), x[:40], cand, np.arange(40))  # the true one itself
    assert r["top1"] == 100.0


def test_whitening_statistics_come_from_training_trials_only(sim_dir, monkeypatch):
    from neuroimagen.evaluation import zero_shot as zs

    fitted = []
    fit = zs.Whitener.fit.__func__
    monkeypatch.setattr(zs.Whitener, "fit", classmethod(lambda cls, eeg, *a, **k: fitted.append(eeg) or
                                                        fit(cls, eeg, *a, **k)))
    zs.run_protocol(sim_dir, [1, 2], ("intra", "loso"), zs.ZeroShotConfig(epochs=1))
    train = {s: zs.load_trials(sim_dir, [s], "training", True).eeg for s in (1, 2)}
    test = np.concatenate([zs.load_trials(sim_dir, [s], "test", True).eeg for s in (1, 2)])
    # intra 1, intra 2, loso 1 (trained on 2), loso 2 (trained on 1)
    assert len(fitted) == 4
    for got, want in zip(fitted, [train[1], train[2], train[2], train[1]], strict=True):
        np.testing.assert_array_equal(got, want)
        assert not (got.reshape(len(got), -1)[:, None] == test.reshape(len(test), -1)[None]).all(-1).any()


def test_a_split_that_shares_concepts_is_refused(sim_dir):
    from neuroimagen.evaluation.zero_shot import ZeroShotConfig, load_trials, zero_shot

    train = load_trials(sim_dir, [1], "training", True)
    with pytest.raises(ValueError, match="Not a zero-shot split"):
        zero_shot(train, train, ZeroShotConfig(epochs=1))


def test_identification_counts_ties_against_the_true_concept_and_refuses_nan():
    """An encoder that says the same thing for every trial identifies nothing (ties are not wins), and a NaN in the
    data is an error rather than a perfect score."""
    import torch

    from neuroimagen.evaluation.zero_shot import identify

    candidates = np.eye(10)
    x = np.zeros((10, 17, 100), np.float32)
    constant = identify(lambda t: torch.ones(len(t), 10), x, candidates, np.arange(10))
    assert constant["top1"] == 0.0 and constant["top5"] == 0.0
    perfect = identify(lambda t: torch.eye(10)[: len(t)], x, candidates, np.arange(10))
    assert perfect["top1"] == 100.0
    with pytest.raises(ValueError, match="non-finite"):
        identify(lambda t: torch.full((len(t), 10), float("nan")), x, candidates, np.arange(10))


def test_training_the_zero_shot_encoder_leaves_torchs_global_generator_alone():
    """The encoder is seeded from its config inside a forked generator: a caller's random stream is not reset."""
    import torch

    from neuroimagen.evaluation.zero_shot import ZeroShotConfig, train_encoder

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 17, 100)).astype(np.float32)
    targets = np.eye(4, 16, dtype=np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_encoder(x, np.arange(8) % 4, targets, [f"C{i}" for i in range(17)], 100.0, ZeroShotConfig(epochs=1))
    assert torch.equal(torch.rand(3), expected)
