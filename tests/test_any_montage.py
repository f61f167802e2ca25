"""Models of any montage (issue 24, part 1): a data file of 17 channels at 100 Hz trains models that record those
channels, that rate and that window, and recordings from other caps are mapped onto the model's own channels.

The 128-channel behaviour is covered where it was (tests/test_training.py, test_preprocessing.py): unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# THINGS-EEG2's 17 occipito-parietal channels, 100 Hz, -0.2 to 0.79 s (Gifford et al. 2022)
THINGS_CH = ["P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]
SFREQ, TMIN, N_TIMES = 100.0, -0.2, 100
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.json"


def _things_like(path: Path, stim_records, seed: int = 0) -> tuple[Path, Path]:
    """2 subjects x every stimulus: a class topography over the 17 channels, evoked at 150 ms, plus noise; written
    in the project's format with ``ch_names``, ``sfreq``, ``tmin`` and ``window``; split by image (8/1/1 per class)."""
    from neuroimagen.data.eeg_imagenet import save_eeg_imagenet, save_splits

    rng = np.random.default_rng(seed)
    t = TMIN + np.arange(N_TIMES) / SFREQ
    evoked = np.exp(-0.5 * ((t - 0.15) / 0.05) ** 2)
    classes = np.array([r.class_index for r in stim_records])
    topographies = rng.standard_normal((classes.max() + 1, len(THINGS_CH), 1))
    eeg, images, labels, subjects = [], [], [], []
    for s in (1, 2):
        for i, c in enumerate(classes):
            eeg.append((2.0 * topographies[c] * evoked + rng.standard_normal((len(THINGS_CH), N_TIMES))).astype(np.float32))
            images.append(i)
            labels.append(int(c))
            subjects.append(s)
    save_eeg_imagenet(path, eeg, images, labels, subjects, images=[r.image for r in stim_records], ch_names=THINGS_CH,
                      sfreq=SFREQ, tmin=TMIN, window=(0, N_TIMES))
    rank = np.array([int(r.image.split("_")[-1]) for r in stim_records])  # 1..per_class within a class
    part = {"train": rank <= 8, "val": rank == 9, "test": rank == 10}
    splits = save_splits(path.with_name(path.stem + "_splits.pth"),
                         {k: [n for n, i in enumerate(images) if v[i]] for k, v in part.items()})
    return path, splits


@pytest.fixture(scope="module")
def things_run(tmp_path_factory, stimuli_dir):
    """``python -m neuroimagen.train STAGE --config configs/debug.json`` on the 17-channel file, for the EEG stages."""
    from neuroimagen.data.stimuli import load_stimulus_metadata
    from neuroimagen.train import main

    root = tmp_path_factory.mktemp("things")
    data, splits = _things_like(root / "things.pth", load_stimulus_metadata(stimuli_dir))
    out = root / "run"
    args = ["--config", str(CONFIG), "--data", str(data), "--splits", str(splits), "--stimuli", str(stimuli_dir),
            "--out", str(out)]
    for stage in ("encoder", "semantic", "class_decoder"):
        assert main([stage, *args]) == 0
    return out


def test_the_data_files_space_is_read_and_refused_when_inconsistent(tmp_path, sim_files):
    from neuroimagen.data.eeg_imagenet import eeg_space, load_eeg_imagenet, save_eeg_imagenet

    f = save_eeg_imagenet(tmp_path / "a.pth", [np.zeros((17, 120), np.float32)] * 2, [0, 0], [0, 0], [1, 1],
                          images=["x"], ch_names=THINGS_CH, sfreq=SFREQ, tmin=TMIN, window=(10, 110))
    # the model's window starts 10 samples (0.1 s) after the trial's first sample, at -0.2 s: -0.1 s from onset
    assert eeg_space(f) == {"ch_names": THINGS_CH, "sfreq": 100.0, "tmin": pytest.approx(-0.1)}
    ds = load_eeg_imagenet(f, split=None)
    assert ds.arrays()[0].shape == (2, 17, 100) and ds[0]["eeg"].shape == (17, 100)
    # the published layout: the 128 actiCAP channels at 1 kHz from 20 ms, as before
    space = eeg_space(sim_files[0])
    assert len(space["ch_names"]) == 128 and space["sfreq"] == 1000.0 and space["tmin"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="'ch_names' has 3 names for 17 EEG channels"):
        save_eeg_imagenet(tmp_path / "b.pth", [np.zeros((17, 120), np.float32)], [0], [0], [1], images=["x"],
                          ch_names=["O1", "Oz", "O2"])
    with pytest.raises(ValueError, match="'window' must be"):
        save_eeg_imagenet(tmp_path / "c.pth", [np.zeros((17, 120), np.float32)], [0], [0], [1], images=["x"],
                          ch_names=THINGS_CH, window=(50, 20))


def test_models_trained_on_17_channels_at_100_hz_record_them(things_run):
    from neuroimagen.models import ClassDecoder, EEGEncoder, SemanticDecoder

    enc = EEGEncoder.from_pretrained(things_run / "encoder")
    assert enc.config.ch_names == THINGS_CH and enc.config.n_chans == 17
    assert enc.config.n_times == N_TIMES and enc.config.sfreq == SFREQ and enc.config.tmin == pytest.approx(TMIN)
    assert enc.config.pool == 1  # 100 Hz is already near the trunk's 250 Hz: no averaging of samples
    for model in (SemanticDecoder.from_pretrained(things_run / "semantic" / "decoder"),
                  ClassDecoder.from_pretrained(things_run / "class_decoder")):
        assert (model.config.ch_names, model.config.n_times, model.config.sfreq) == (THINGS_CH, N_TIMES, SFREQ)
    with torch.no_grad():
        assert enc(torch.zeros(2, 17, N_TIMES)).shape == (2, enc.config.embed_dim)
    # the encoder learned the 17-channel data: above chance (1/40) on held-out trials
    import json

    assert json.loads((things_run / "encoder" / "metrics.json").read_text())["best_val_top1"] > 1 / 40


def _cap_trial(names, sfreq: float = 500.0, seed: int = 0):
    """A recording from a cap with channels ``names``: -0.2 to 0.8 s at ``sfreq``, each channel its own signal."""
    from neuroimagen.data import EEGTrial

    rng = np.random.default_rng(seed)
    n = int(round(1.0 * sfreq))
    return EEGTrial(data=rng.standard_normal((len(names), n)) * 1e-5, sfreq=sfreq, ch_names=list(names), tmin=-0.2)


def test_an_upload_from_a_bigger_cap_is_mapped_onto_the_models_17_channels(things_run, tmp_path):
    from tiny_pipeline import make_tiny_pipeline

    from neuroimagen.data import preprocess
    from neuroimagen.data.caps import TEN_TEN_64, TEN_TWENTY_19
    from neuroimagen.models import EEGEncoder

    pipe = make_tiny_pipeline()
    assert pipe.eeg_preprocess_kwargs["crop"] == (20, 460) and len(pipe.eeg_preprocess_kwargs["ch_names"]) == 128
    pipe.register_modules(eeg_encoder=EEGEncoder.from_pretrained(things_run / "encoder"))
    kw = pipe.eeg_preprocess_kwargs
    assert kw == {"ch_names": THINGS_CH, "sfreq": 100.0, "crop": (-20, 80)}

    # a 64-channel 10-10 cap at 500 Hz holds all 17: each is taken under its own name, nothing interpolated
    big = _cap_trial(TEN_TEN_64)
    out = preprocess(big, **kw)
    assert out.data.shape == (17, N_TIMES) and out.ch_names == THINGS_CH and out.sfreq == 100.0
    assert sorted(out.info["channels"]["mapped"]) == sorted(THINGS_CH) and not out.info["channels"]["interpolated"]
    # the same as a recording of those 17 channels alone, in the model's order
    rows = [TEN_TEN_64.index(n) for n in THINGS_CH[::-1]]
    alone = _cap_trial(THINGS_CH[::-1])
    alone.data = big.data[rows]
    np.testing.assert_allclose(preprocess(alone, **kw).data, out.data, atol=1e-5)

    # the 10-20 19 cap lacks 10 of them: interpolated from its channels (the existing behaviour), named as such
    small = preprocess(_cap_trial(TEN_TWENTY_19), **kw)
    assert small.data.shape == (17, N_TIMES)
    assert sorted(small.info["channels"]["mapped"]) == ["O1", "O2", "P3", "P4", "P7", "P8", "Pz"]
    assert set(small.info["channels"]["interpolated"]) == set(THINGS_CH) - {"O1", "O2", "P3", "P4", "P7", "P8", "Pz"}
    assert np.isfinite(small.data).all()
    # too few channels: the existing clear error, naming the model's own 17
    with pytest.raises(ValueError, match=r"expected at least 8 EEG channels .* the model's 17 are interpolated"):
        preprocess(_cap_trial(["O1", "Oz", "O2", "Cz", "Fz"]), **kw)

    # the app reads an upload onto the pipeline's channels
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from demo.handlers import Handlers

    np.savez(tmp_path / "upload.npz", data=big.data, sfreq=big.sfreq, ch_names=np.array(TEN_TEN_64), tmin=-0.2)
    trial = Handlers(pipe).trials.upload([str(tmp_path / "upload.npz")])
    assert trial.model.ch_names == THINGS_CH and trial.model.data.shape == (17, N_TIMES)
    np.testing.assert_allclose(trial.model.data, out.data, atol=1e-5)
