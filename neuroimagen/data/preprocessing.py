"""Signal steps shared by every path into the model space (docs/CONTRACTS.md).

``bandpass`` and ``standardize`` are used by the simulator (to write files like the published
``eeg_5_95_std.pth``), by the training datasets and by :func:`preprocess` for uploaded trials, so the
three land in the same space.
"""

from __future__ import annotations

import numpy as np

L_FREQ = 5.0  # Hz, as the published eeg_5_95_std.pth
H_FREQ = 95.0


def bandpass(data: np.ndarray, sfreq: float, l_freq: float | None = L_FREQ, h_freq: float | None = H_FREQ) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass along the last axis.

    An IIR filter because trials are short (~0.5 s): a FIR filter with a 5 Hz edge would be longer than
    the trial. ``l_freq=None`` / ``h_freq=None`` make it a low-pass / high-pass.

    Parameters
    ----------
    data : ndarray, shape (..., n_times)
    sfreq : float
        Sampling rate in Hz.
    """
    from scipy.signal import butter, sosfiltfilt

    nyq = sfreq / 2.0
    if h_freq is not None and h_freq >= nyq:
        h_freq = None  # nothing to remove above Nyquist
    if l_freq is None and h_freq is None:
        return np.asarray(data, dtype=np.float64)
    if l_freq is None:
        sos = butter(4, h_freq, btype="lowpass", fs=sfreq, output="sos")
    elif h_freq is None:
        sos = butter(4, l_freq, btype="highpass", fs=sfreq, output="sos")
    else:
        sos = butter(4, [l_freq, h_freq], btype="bandpass", fs=sfreq, output="sos")
    return sosfiltfilt(sos, np.asarray(data, dtype=np.float64), axis=-1)


def standardize(data: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per channel remove the mean over time, then divide by one global std (topography kept).

    Parameters
    ----------
    data : ndarray, shape (..., n_chans, n_times)
        One trial or a batch; each trial is scaled on its own.
    """
    x = np.asarray(data, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    return x / np.maximum(std, eps)


FLAT_STD = 1e-15  # a channel whose std is below this (in the file's units) carries no signal
MIN_MATCHED = 0.75  # fraction of the model's channels that must be in the file (the rest are interpolated)


def _match_channels(file_names: list[str], model_names: tuple[str, ...]) -> dict[str, int]:
    """Model channel name -> row in the file, matched case-insensitively (also 'EEG Fp1' / 'Fp1-Ref' forms)."""

    def norm(name: str) -> str:
        n = name.strip().lower()
        for prefix in ("eeg ", "eeg-", "eeg_"):
            n = n.removeprefix(prefix)
        for suffix in ("-ref", "-avg", "-a1", "-a2", "-m1", "-m2"):
            n = n.removesuffix(suffix)
        return n

    rows = {}
    for i, n in enumerate(file_names):
        rows.setdefault(norm(n), i)
    return {m: rows[norm(m)] for m in model_names if norm(m) in rows}


def preprocess(trial, ch_names: tuple[str, ...] | list[str] | None = None, sfreq: float = 1000.0,
               l_freq: float | None = L_FREQ, h_freq: float | None = H_FREQ, crop: tuple[int, int] = (20, 460),
               max_interpolated: int = 16):
    """Bring a trial into the models' space (docs/CONTRACTS.md).

    Maps channels by name to the model montage (case-insensitive), interpolates a few missing or flat
    ones with spherical splines (MNE), refuses when too few match, resamples to ``sfreq``, band-passes,
    crops samples ``crop`` after stimulus onset and standardizes. A trial of exactly
    ``crop[1] - crop[0]`` samples is taken as already cropped.

    Parameters
    ----------
    trial : EEGTrial
        From :func:`neuroimagen.data.read_trial`; data shape (n_chans, n_times), stimulus onset at sample 0.
    ch_names : list of str | None
        The model's channels (default: the 128 actiCAP channels).
    max_interpolated : int
        Most channels that may be missing or flat; more is refused.

    Returns
    -------
    trial : EEGTrial
        data shape (len(ch_names), crop[1] - crop[0]); ``info["channels"]`` reports what was mapped,
        interpolated and dropped, and ``info["preprocessed"]`` is True.
    """
    from .io import EEGTrial
    from .montage import model_ch_names

    model = tuple(model_ch_names() if ch_names is None else ch_names)
    data = np.asarray(trial.data)
    if data.ndim != 2:
        raise ValueError(f"Invalid EEG shape: expected 2 dimensions (n_chans, n_times), got {data.shape}.")
    if data.shape[0] != len(trial.ch_names):
        raise ValueError(f"{len(trial.ch_names)} channel names for {data.shape[0]} channels of data.")
    data = data.astype(np.float64)
    bad = ~np.isfinite(data)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        names = ", ".join(repr(trial.ch_names[i]) for i in rows[:5]) + (" ..." if len(rows) > 5 else "")
        raise ValueError(f"The EEG contains {int(bad.sum())} NaN or infinite values in {len(rows)} channels "
                         f"({names}); expected finite numbers. Repair or drop those channels first.")

    # 1. Channels: map by name, mark missing and flat ones for interpolation.
    rows = _match_channels(list(trial.ch_names), model)
    if len(rows) < MIN_MATCHED * len(model):
        found = [m for m in model if m in rows][:3]
        raise ValueError(
            f"Only {len(rows)} of the {len(model)} model channels were found in the file"
            f"{' (e.g. ' + ', '.join(map(repr, found)) + ')' if found else ''}; expected the actiCAP 128 names of "
            f"brainproducts-RNP-BA-128, e.g. {', '.join(map(repr, model[:4]))}, ... The file has "
            f"{', '.join(map(repr, list(trial.ch_names)[:4]))}{' ...' if len(trial.ch_names) > 4 else ''}.")
    x = np.zeros((len(model), data.shape[1]))
    interpolated: dict[str, str] = {}
    for k, m in enumerate(model):
        if m in rows:
            x[k] = data[rows[m]]
            if x[k].std() < FLAT_STD:
                interpolated[m] = "flat"
        else:
            interpolated[m] = "missing"
    if len(interpolated) > max_interpolated:
        n_flat = sum(v == "flat" for v in interpolated.values())
        raise ValueError(f"{len(interpolated)} of the {len(model)} model channels are missing ({len(interpolated) - n_flat}) "
                         f"or flat ({n_flat}); at most {max_interpolated} can be interpolated.")
    used = set(rows.values())
    dropped = [n for i, n in enumerate(trial.ch_names) if i not in used]

    # 2. Rate: resample (never refuse another rate).
    info = dict(trial.info)
    if abs(trial.sfreq - sfreq) > 1e-6:
        from fractions import Fraction

        from scipy.signal import resample_poly

        frac = Fraction(sfreq / trial.sfreq).limit_denominator(1000)
        x = resample_poly(x, frac.numerator, frac.denominator, axis=-1)
        info["resampled"] = f"{trial.sfreq:g} Hz -> {sfreq:g} Hz"
    n_crop = crop[1] - crop[0]
    if x.shape[1] != n_crop and x.shape[1] < crop[1]:
        raise ValueError(f"The trial is too short: {trial.n_times} samples at {trial.sfreq:g} Hz "
                         f"({trial.duration * 1000:.0f} ms); expected at least {crop[1] / sfreq * 1000:.0f} ms from "
                         f"stimulus onset (samples {crop[0]}-{crop[1]} are used), or exactly {n_crop} samples "
                         f"at {sfreq:g} Hz if already cropped.")

    # 3. Interpolate missing / flat channels from their neighbours (MNE spherical splines).
    if interpolated:
        x = _interpolate(x, model, sfreq, list(interpolated))

    # 4. Filter on the whole trial, then crop, then standardize.
    x = bandpass(x, sfreq, l_freq, h_freq)
    if x.shape[1] == n_crop:
        info["cropped"] = f"already {n_crop} samples: taken as samples {crop[0]}-{crop[1]} after onset"
    else:
        x = x[:, crop[0]:crop[1]]
    x = standardize(x)
    info["channels"] = {"mapped": [m for m in model if m in rows and m not in interpolated],
                        "interpolated": interpolated, "dropped": dropped}
    info["preprocessed"] = True
    return EEGTrial(data=x.astype(np.float32), sfreq=sfreq, ch_names=list(model), subject=trial.subject,
                    label=trial.label, stimulus=trial.stimulus, info=info)


def _interpolate(x: np.ndarray, ch_names: tuple[str, ...], sfreq: float, bads: list[str]) -> np.ndarray:
    import mne

    from .montage import make_info

    raw = mne.io.RawArray(x, make_info(ch_names, sfreq), verbose="error")
    raw.info["bads"] = list(bads)
    raw.interpolate_bads(reset_bads=True, verbose="error")
    return raw.get_data()
