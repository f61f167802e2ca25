"""Synthetic EEG trials for the load test and the app tests: noise plus a channel-specific evoked burst.

Not a simulation of anything (``neuroimagen.data.simulate`` is): enough to exercise every view of the app,
different per random stream, so that a request's result can be told from another's.
"""

from __future__ import annotations

import numpy as np

from neuroimagen.data import EEGTrial
from neuroimagen.data.montage import SFREQ, model_ch_names

N_TIMES = 500  # 0.5 s at 1 kHz, the model's epoch


def synthetic_trial(rng: np.random.Generator, frequency: float = 8.0, latency: float = 0.15, **fields) -> EEGTrial:
    """A trial on the model montage at 1 kHz in volts: a ``frequency`` Hz burst peaking at ``latency`` s, with
    a random gain per channel, plus white noise; ``fields`` (``subject``, ``label``, ``stimulus``) are passed to
    :class:`~neuroimagen.data.EEGTrial`."""
    names = list(model_ch_names())
    t = np.arange(N_TIMES) / SFREQ
    burst = np.sin(2 * np.pi * frequency * t) * np.exp(-(((t - latency) / 0.05) ** 2))
    data = 5e-6 * (np.outer(rng.standard_normal(len(names)), burst) + 0.3 * rng.standard_normal((len(names), len(t))))
    return EEGTrial(data=data, sfreq=SFREQ, ch_names=names, **fields)
