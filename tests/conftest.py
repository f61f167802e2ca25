"""Shared fixtures: a small stimulus set and a small simulated data set, made once per session."""

from __future__ import annotations

import pytest
import torch

APP_THREADS = torch.get_num_threads()  # torch's default here, before any test changes it: what app.py runs with


@pytest.fixture(autouse=True)
def _threads():
    """Every test starts at the app's thread count: the tests that compare library and app pixel for pixel
    (determinism, the load test's reference) need both to sum floats in the same order. Training stages give
    the count back themselves (``training.common.stage_threads``); this guards against anything else."""
    torch.set_num_threads(APP_THREADS)


@pytest.fixture(scope="session")
def stimuli_dir(tmp_path_factory):
    from neuroimagen.data.stimuli import make_stimulus_set

    out = tmp_path_factory.mktemp("stimuli")
    make_stimulus_set(out, per_class=10, seed=0)
    return out


@pytest.fixture(scope="session")
def sim_files(tmp_path_factory, stimuli_dir):
    """A demo-preset simulation of the small stimulus set: 2 subjects x 400 images (8/1/1 per class split)."""
    from neuroimagen.data.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("sim") / "sim.pth"
    simulate_dataset(stimuli_dir, out, preset="demo", n_subjects=2, seed=0)
    return out, out.with_name("sim_splits.pth")


# ------------------------------------------------------------------ generic EEG fixtures (no simulator)
@pytest.fixture(scope="session")
def model_names() -> list[str]:
    """The model montage's 128 channel names, in order."""
    from neuroimagen.data.montage import model_ch_names

    return list(model_ch_names())


def load_script(name: str):
    """A module of scripts/ (not a package), e.g. ``load_script("make_bad_inputs")``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smooth_eeg(n_times: int = 500, sfreq: float = 1000.0, seed: int = 0):
    """(128, n_times) spatially smooth signals in volts (~10 uV; the bad-input corpus's generator), so that
    interpolating a channel from its neighbours has something to recover."""
    return 1e-6 * load_script("make_bad_inputs").smooth_eeg(n_times, sfreq, seed)


@pytest.fixture(scope="session")
def smooth_trial(model_names):
    """A raw trial on the model montage at 1 kHz, 500 samples, in volts. Copy ``.data`` before changing it."""
    from neuroimagen.data import EEGTrial

    return EEGTrial(smooth_eeg(), 1000.0, list(model_names), subject=2, label=8)


class Exploit:
    """A pickle payload: unpickling it calls open(marker, 'w'), so the marker file proves code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_exploit(path, marker, legacy: bool, **items):
    """Write a .pth whose unpickling would create ``marker`` (torch's zip format, or a legacy plain pickle)."""
    import pickle

    import torch

    obj = {"data": torch.zeros(128, 500), **items, "x": Exploit(marker)}
    if legacy:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    else:
        torch.save(obj, path)
    return path
