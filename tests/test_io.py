"""read_trial / write_trial: every upload format, and every bad input gets a clear message (tests/data/bad)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, write_exploit

from neuroimagen.data import EEGTrial, load_eeg_imagenet, preprocess, read_trial, write_trial
from neuroimagen.data.io import TrialFileError

BAD_DIR = Path(__file__).parent / "data" / "bad"
MANIFEST = json.loads((BAD_DIR / "manifest.json").read_text())
FORMATS = [".npz", ".npy", ".pth", ".fif", ".edf", ".bdf", ".set", ".vhdr"]


# ---------------------------------------------------------------- the committed bad-input corpus
def test_corpus_is_complete_small_and_current(tmp_path):
    files = {f.name for f in BAD_DIR.iterdir()} - {"manifest.json"}
    assert files == set(MANIFEST), "tests/data/bad and its manifest disagree: run scripts/make_bad_inputs.py"
    assert sum(f.stat().st_size for f in BAD_DIR.iterdir()) < 2 * 2**20
    # the script still writes what is committed (same cases, same expectations)
    assert load_script("make_bad_inputs").make_bad_inputs(tmp_path) == MANIFEST


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bad_input_corpus(name):
    expect = MANIFEST[name]
    if expect["ok"]:
        out = preprocess(read_trial(BAD_DIR / name))
        assert out.data.shape == (128, 440) and out.info["preprocessed"]
        assert expect["info"] in repr(out.info)
    else:
        with pytest.raises(ValueError) as err:
            preprocess(read_trial(BAD_DIR / name))
        assert expect["message"] in str(err.value)
        assert "Traceback" not in str(err.value) and str(BAD_DIR) not in str(err.value)  # no server paths leak


def test_corrupt_files_say_truncated_or_corrupt():
    for name in ("truncated.edf", "truncated.fif", "corrupt.fif", "corrupt.npz", "corrupt.pth"):
        with pytest.raises(TrialFileError, match="The file may be truncated or corrupt.$"):
            read_trial(BAD_DIR / name)


# ---------------------------------------------------------------- good input: every format
@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_round_trips_to_the_same_model_space(smooth_trial, tmp_path, ext):
    path = write_trial(smooth_trial, tmp_path / f"trial{ext}")
    back = read_trial(path)
    assert back.data.shape == (128, 500) and back.sfreq == 1000.0 and back.ch_names == smooth_trial.ch_names
    assert back.info["file"] == f"trial{ext}"
    np.testing.assert_allclose(back.data, smooth_trial.data, atol=2e-8 if ext == ".edf" else 1e-9)  # volts kept
    np.testing.assert_allclose(preprocess(back).data, preprocess(smooth_trial).data, atol=5e-3)
    if ext in (".npz", ".pth"):
        assert (back.subject, back.label) == (2, 8)
    if ext == ".vhdr":
        assert {p.suffix for p in tmp_path.iterdir()} == {".vhdr", ".vmrk", ".eeg"}


def test_npz_and_pth_keep_the_stimulus(smooth_trial, tmp_path):
    stim = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    trial = EEGTrial(smooth_trial.data, 1000.0, smooth_trial.ch_names, stimulus=stim)
    for ext in (".npz", ".pth"):
        np.testing.assert_array_equal(read_trial(write_trial(trial, tmp_path / f"t{ext}")).stimulus, stim)


def test_brainvision_needs_its_companions(smooth_trial, tmp_path):
    path = write_trial(smooth_trial, tmp_path / "rec.vhdr")
    (tmp_path / "rec.vmrk").unlink()
    with pytest.raises(ValueError, match="'rec.vhdr' is a BrainVision header whose 'rec.vmrk' is not beside it"):
        read_trial(path)


def test_epochs_fif_gives_the_first_epoch_from_onset(smooth_trial, tmp_path):
    import mne

    from neuroimagen.data.montage import make_info

    data = np.stack([smooth_trial.data, 2 * smooth_trial.data])  # 2 epochs, -100 ms .. 399 ms
    epochs = mne.EpochsArray(data, make_info(), tmin=-0.1, verbose="error")
    epochs.save(tmp_path / "t-epo.fif", verbose="error")
    back = read_trial(tmp_path / "t-epo.fif")
    np.testing.assert_allclose(back.data, smooth_trial.data[:, 100:], rtol=1e-6, atol=1e-12)
    assert "first of 2 epochs" in back.info["note"] and "stimulus onset" in back.info["note"]


def test_pth_items_and_bare_arrays(smooth_trial, tmp_path, model_names):
    eeg = torch.from_numpy(smooth_trial.data).half()
    torch.save({"eeg": eeg, "label": 5, "image": 17, "subject": 3}, tmp_path / "item.pth")  # one EEG-ImageNet item
    item = read_trial(tmp_path / "item.pth")
    assert (item.label, item.subject, item.info["image"], item.sfreq) == (5, 3, 17, 1000.0)
    assert item.ch_names == model_names and "taken as the model's 128 channels at 1000 Hz" in item.info["assumed"]
    torch.save(eeg, tmp_path / "tensor.pth")
    np.testing.assert_array_equal(read_trial(tmp_path / "tensor.pth").data, eeg.double().numpy())
    np.savez(tmp_path / "rate.npz", data=smooth_trial.data, sfreq=500.0)  # a rate but no names
    assert read_trial(tmp_path / "rate.npz").sfreq == 500.0
    np.savez(tmp_path / "names.npz", eeg=smooth_trial.data[:3], ch_names=["Cz", "Pz", "Oz"])  # names, no rate
    named = read_trial(tmp_path / "names.npz")
    assert named.ch_names == ["Cz", "Pz", "Oz"] and "taken as 1000 Hz" in named.info["assumed"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pickle_with_code_is_refused_and_never_run(tmp_path, legacy):
    marker = tmp_path / "pwned.txt"
    path = write_exploit(tmp_path / "evil.pth", marker, legacy)
    with pytest.raises(ValueError, match="'evil.pth'") as err:
        read_trial(path)
    assert "could run code" in str(err.value) or "safe loader" in str(err.value)
    with pytest.raises(ValueError, match="'evil.pth'"):
        load_eeg_imagenet(path, split=None)
    assert not marker.exists(), "the pickle's code ran"
    if not legacy:
        assert "Refused to load 'evil.pth': the file carries Python objects" in str(err.value)


def test_oversized_file_is_refused_before_reading(smooth_trial, tmp_path, monkeypatch):
    import neuroimagen.data.io as io

    path = write_trial(smooth_trial, tmp_path / "big.npz")
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(io, "_read_npz", lambda p: pytest.fail("the file was read"))
    with pytest.raises(ValueError, match=r"'big.npz' is 0\.\d MB: the limit is 0 MB for one trial"):
        read_trial(path)


def test_missing_file_and_bad_arguments(tmp_path, smooth_trial):
    with pytest.raises(FileNotFoundError, match="No file at"):
        read_trial(tmp_path / "nothing.edf")
    with pytest.raises(TypeError, match="path must be an instance of str or Path, got int instead"):
        read_trial(3)
    with pytest.raises(ValueError, match="Unsupported file type '.mat' for 't.mat'. Allowed: .npz, .npy"):
        write_trial(smooth_trial, tmp_path / "t.mat")
    with pytest.raises(TypeError, match="trial must be an instance of EEGTrial, got ndarray instead"):
        write_trial(smooth_trial.data, tmp_path / "t.npz")


def test_an_archive_that_unpacks_too_big_is_refused(tmp_path, monkeypatch):
    import neuroimagen.data.io as io

    np.savez_compressed(tmp_path / "bomb.npz", data=np.zeros((128, 2000), np.float32))  # ~1 MB unpacked, ~1 KB packed
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 100_000)
    with pytest.raises(ValueError, match=r"'bomb.npz' unpacks to 1.0 MB: the limit is 0 MB"):
        read_trial(tmp_path / "bomb.npz")
