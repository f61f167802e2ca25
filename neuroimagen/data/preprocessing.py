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
