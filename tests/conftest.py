"""Shared fixtures: a small stimulus set and a small simulated data set, made once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(2)


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
