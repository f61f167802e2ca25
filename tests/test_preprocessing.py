"""preprocess(): any reasonable trial lands in the models' space; unusable ones are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import smooth_eeg

from neuroimagen.data import EEGTrial, preprocess
from neuroimagen.data.preprocessing import bandpass, standardize


def test_model_montage_trial_is_filtered_cropped_and_standardized(smooth_trial, model_names, monkeypatch):
    import neuroimagen.data.preprocessing as pp

    monkeypatch.setattr(pp, "interpolation_weights", lambda *a: pytest.fail("the fast path made MNE objects"))
    out = preprocess(smooth_trial)
    assert out.data.shape == (128, 440) and out.data.dtype == np.float32 and out.sfreq == 1000.0
    expected = standardize(bandpass(smooth_trial.data, 1000.0, 5.0, 95.0)[:, 20:460])
    np.testing.assert_allclose(out.data, expected, atol=1e-5)
    np.testing.assert_allclose(out.data.mean(axis=1), 0, atol=1e-5)
    assert abs(out.data.std() - 1) < 1e-4
    assert out.info["preprocessed"] is True
    assert out.info["channels"] == {"mapped": model_names, "interpolated": {}, "dropped": [], "scheme": "10-05 names",
                                    "n_used": 128}
    assert (out.subject, out.label) == (2, 8)
    assert smooth_trial.data.shape == (128, 500), "the input trial was changed"


def test_channels_map_by_name_in_any_order_and_case(smooth_trial, model_names):
    order = np.random.default_rng(1).permutation(128)
    names = [f"EEG {model_names[i].upper()}" for i in order]
    extra = np.vstack([smooth_trial.data[order], np.ones((2, 500))])
    out = preprocess(EEGTrial(extra, 1000.0, [*names, "ECG", "Status"]))
    np.testing.assert_allclose(out.data, preprocess(smooth_trial).data, atol=1e-5)
    assert out.info["channels"]["dropped"] == ["ECG", "Status"] and len(out.info["channels"]["mapped"]) == 128


def test_five_missing_channels_are_interpolated(smooth_trial, model_names):
    gone = ["Oz", "Pz", "Cz", "C3", "C4"]
    keep = [k for k, n in enumerate(model_names) if n not in gone]
    out = preprocess(EEGTrial(smooth_trial.data[keep], 1000.0, [model_names[k] for k in keep]))
    assert out.info["channels"]["interpolated"] == {n: "missing" for n in model_names if n in gone}
    assert out.data.shape == (128, 440) and out.ch_names == model_names
    ref = preprocess(smooth_trial).data
    for name in gone:
        k = model_names.index(name)
        assert np.corrcoef(out.data[k], ref[k])[0, 1] > 0.8, name


def test_interpolation_is_mnes_spherical_splines(smooth_trial, model_names):
    """The cached weights are MNE's spherical splines (interpolate_bads, around the model montage's sphere;
    linear in the data), applied without building a Raw."""
    import mne

    from neuroimagen.data.channels import model_origin
    from neuroimagen.data.montage import make_info

    gone = ["Oz", "Pz", "Cz", "C3", "C4"]
    raw = mne.io.RawArray(smooth_trial.data.copy(), make_info(), verbose="error")
    raw.info["bads"] = gone
    raw.interpolate_bads(reset_bads=True, origin=model_origin(), verbose="error")
    expected = standardize(bandpass(raw.get_data(), 1000.0)[:, 20:460])
    keep = [k for k, n in enumerate(model_names) if n not in gone]
    for _ in range(2):  # computed, then from the cache
        out = preprocess(EEGTrial(smooth_trial.data[keep], 1000.0, [model_names[k] for k in keep]))
        np.testing.assert_allclose(out.data, expected, atol=5e-5)  # float32 model input (another origin: 2e-2)


def test_a_few_flat_channels_are_interpolated(smooth_trial, model_names):
    d = smooth_trial.data.copy()
    d[[5, 40]] = 3e-6  # constant (a disconnected electrode with an offset)
    out = preprocess(EEGTrial(d, 1000.0, model_names))
    assert out.info["channels"]["interpolated"] == {model_names[5]: "flat", model_names[40]: "flat"}
    assert model_names[5] not in out.info["channels"]["mapped"]
    ref = preprocess(smooth_trial).data
    assert np.corrcoef(out.data[5], ref[5])[0, 1] > 0.8


@pytest.mark.parametrize("sfreq", [250.0, 512.0, 2048.0])
def test_other_rates_are_resampled(model_names, sfreq):
    n = int(round(0.5 * sfreq))
    out = preprocess(EEGTrial(smooth_eeg(n, sfreq), sfreq, model_names))
    assert out.data.shape == (128, 440) and out.info["resampled"] == f"{sfreq:g} Hz -> 1000 Hz"
    truth = preprocess(EEGTrial(smooth_eeg(500, 1000.0), 1000.0, model_names)).data
    assert np.corrcoef(out.data.ravel(), truth.ravel())[0, 1] > 0.95


def test_an_already_cropped_trial_is_not_cropped_again(smooth_trial, model_names):
    out = preprocess(EEGTrial(smooth_trial.data[:, 20:460], 1000.0, model_names))
    assert out.data.shape == (128, 440) and "already 440 samples" in out.info["cropped"]


@pytest.mark.parametrize("n_times", [300, 441, 459])
def test_too_short(smooth_trial, model_names, n_times):
    with pytest.raises(ValueError, match=f"too short: {n_times} samples at 1000 Hz \\({n_times} ms\\); expected at "
                                         f"least 460 ms from stimulus onset"):
        preprocess(EEGTrial(smooth_trial.data[:, :n_times], 1000.0, model_names))


def test_nan_and_inf_are_refused_with_the_channels(smooth_trial, model_names):
    d = smooth_trial.data.copy()
    d[3, 10], d[3, 11], d[100, 0] = np.nan, np.inf, -np.inf
    with pytest.raises(ValueError, match=f"3 NaN or infinite values in 2 channels \\('F7', '{model_names[100]}'\\)"):
        preprocess(EEGTrial(d, 1000.0, model_names))


def test_nan_in_an_unused_channel_does_not_matter(smooth_trial, model_names):
    d = np.vstack([smooth_trial.data, np.full((1, 500), np.nan)])
    assert preprocess(EEGTrial(d, 1000.0, [*model_names, "Trigger"])).info["channels"]["dropped"] == ["Trigger"]


def test_many_missing_or_flat_channels_are_interpolated_down_to_the_floor(smooth_trial, model_names):
    from neuroimagen.data.preprocessing import MIN_CHANNELS

    d = smooth_trial.data.copy()
    d[:10] = 0.0
    keep = list(range(120))  # 8 missing + 10 flat: interpolated from the 110 others
    out = preprocess(EEGTrial(d[keep], 1000.0, [model_names[k] for k in keep]))
    assert len(out.info["channels"]["interpolated"]) == 18 and out.info["channels"]["n_used"] == 110
    assert out.info["coverage"] == "110 of 128 model channels recorded, 18 interpolated from 110 channels (10-05 names)"
    few = [model_names.index(n) for n in ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8", "Pz")]
    for n in (MIN_CHANNELS, MIN_CHANNELS - 1):
        trial = EEGTrial(smooth_trial.data[few[:n]], 1000.0, [model_names[k] for k in few[:n]])
        if n >= MIN_CHANNELS:
            assert preprocess(trial).info["channels"]["n_used"] == n
        else:
            with pytest.raises(ValueError, match=f"Only {n} of the file's {n} channels .* could be placed; expected "
                                                 f"at least {MIN_CHANNELS} EEG channels"):
                preprocess(trial)


def test_unknown_channel_names_are_refused(smooth_trial, model_names):
    names = [f"Ch{k}" for k in range(122)] + ["Cz", "Pz", *model_names[:4]]
    with pytest.raises(ValueError, match="Only 6 of the file's 128 channels \\('Ch0', 'Ch1', 'Ch2', 'Ch3', ...\\) "
                                         "could be placed; expected at least 8 EEG channels with known names or "
                                         "positions"):
        preprocess(EEGTrial(smooth_trial.data, 1000.0, names))


def test_a_custom_channel_set(smooth_trial, model_names):
    out = preprocess(smooth_trial, ch_names=model_names[:32])
    assert out.data.shape == (32, 440) and out.info["channels"]["dropped"] == model_names[32:]


def test_invalid_arguments(smooth_trial, model_names):
    with pytest.raises(TypeError, match="trial must be an instance of EEGTrial, got ndarray instead"):
        preprocess(smooth_trial.data)
    with pytest.raises(ValueError, match="expected 2 dimensions \\(n_chans, n_times\\), got \\(2, 128, 500\\)"):
        preprocess(EEGTrial(np.zeros((2, 128, 500)), 1000.0, model_names))
    with pytest.raises(ValueError, match="3 channel names for 128 channels of data"):
        preprocess(EEGTrial(smooth_trial.data, 1000.0, model_names[:3]))
    with pytest.raises(ValueError, match="Invalid value for the 'crop' parameter"):
        preprocess(smooth_trial, crop=(460, 20))
    with pytest.raises(ValueError, match="Invalid sampling rate: expected a positive number of Hz, got 0.0"):
        preprocess(EEGTrial(smooth_trial.data, 0.0, model_names))


@pytest.mark.parametrize("sfreq, n_chans, n_times, match", [
    (0.5, 128, 10, "sampled at 0.5 Hz: expected 100 to 20000 Hz"),  # would be resampled 2000-fold
    (1000.0, 600, 500, "has 600 channels: at most 512"),
    (1000.0, 128, 12_000, r"is 12.0 s long \(12000 samples at 1000 Hz\)"),
])
def test_trials_over_the_limits_are_refused_before_any_work(model_names, sfreq, n_chans, n_times, match):
    names = (model_names + [f"X{i}" for i in range(n_chans)])[:n_chans]
    with pytest.raises(ValueError, match=match):
        preprocess(EEGTrial(np.ones((n_chans, n_times), np.float32), sfreq, names))


# ---------------------------------------------------------------- any cap: naming schemes and positions
def _cap_trial(names: list[str], model_names: list[str], positions=None) -> EEGTrial:
    """A trial whose channels are the model's smooth signals at the nearest model electrode (a stand-in for a
    recording of the same field on another cap)."""
    from neuroimagen.data.channels import place_channels

    rows = smooth_eeg()
    pos = place_channels(names, positions).positions if positions is None else np.asarray(positions)
    from neuroimagen.data.channels import _model_positions

    model_pos = np.array([_model_positions()[n] for n in model_names])
    nearest = [int(np.argmin(np.linalg.norm(model_pos - p, axis=1))) for p in pos]
    return EEGTrial(1e-6 * rows[nearest], 1000.0, names, positions=positions)


def test_biosemi_bank_names_are_not_read_as_10_20(model_names):
    """BioSemi's 'F3' is bank F's third electrode: a 256-channel file is placed by the biosemi256 montage, and
    not one of its channels is taken as the model's own F3, C3, ..."""
    names = [f"{b}{k + 1}" for b in "ABCDEFGH" for k in range(32)]
    out = preprocess(_cap_trial(names, model_names))
    rep = out.info["channels"]
    assert rep["scheme"] == "BioSemi bank names (biosemi256)" and rep["mapped"] == [] and rep["n_used"] == 256
    assert len(rep["interpolated"]) == 128


def test_a_32_channel_10_20_cap_is_mapped_and_interpolated(model_names):
    names = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz", "C4", "T8",
             "TP9", "CP5", "CP1", "CP2", "CP6", "TP10", "P7", "P3", "Pz", "P4", "P8", "PO9", "O1", "Oz", "O2", "PO10"]
    out = preprocess(_cap_trial(names, model_names))
    rep = out.info["channels"]
    assert rep["scheme"] == "10-05 names" and sorted(rep["mapped"]) == sorted(names) and len(rep["interpolated"]) == 96
    full = preprocess(EEGTrial(smooth_eeg() * 1e-6, 1000.0, model_names)).data
    assert np.corrcoef(out.data.ravel(), full.ravel())[0, 1] > 0.8  # the field survives 96 interpolated channels


def test_positions_in_the_file_place_channels_with_unknown_names(model_names):
    from neuroimagen.data.channels import _model_positions

    keep = model_names[::4]  # 32 channels named only by number, with their positions
    pos = np.array([_model_positions()[n] for n in keep])
    trial = _cap_trial([f"ch{k}" for k in range(len(keep))], model_names, positions=pos)
    out = preprocess(trial)
    assert out.info["channels"]["scheme"] == "file positions" and out.info["channels"]["n_used"] == 32
    named = preprocess(EEGTrial(trial.data, 1000.0, list(keep)))  # the same channels under their own names
    assert np.corrcoef(out.data.ravel(), named.data.ravel())[0, 1] > 0.99
