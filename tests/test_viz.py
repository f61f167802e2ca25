"""neuroimagen.viz: each plot draws what it says, returns its Figure and never touches pyplot state."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from neuroimagen import viz
from neuroimagen.data.classes import CLASS_NAMES
from neuroimagen.data.montage import model_ch_names


@pytest.fixture(scope="module")
def trial():
    rng = np.random.default_rng(0)
    names = list(model_ch_names())
    data = rng.standard_normal((len(names), 440))
    data[names.index("Oz"), 80:120] += 20  # a clear occipital peak at 100-140 ms after tmin
    return data, 1000.0, names


def _pyplot_figures() -> int:
    plt = sys.modules.get("matplotlib.pyplot")
    return len(plt.get_fignums()) if plt is not None else 0


def test_plot_eeg_butterfly_has_every_channel(trial):
    data, sfreq, names = trial
    before = _pyplot_figures()
    fig = viz.plot_eeg(data, sfreq, names, tmin=0.02, time_s=0.12, title="model input")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    traces = [ln for ln in ax.lines if len(ln.get_xdata()) == data.shape[1]]
    assert len(traces) == len(names)
    x = traces[0].get_xdata()
    assert x[0] == pytest.approx(0.02) and x[-1] == pytest.approx(0.02 + 439 / 1000)
    # the marker at the topomap latency
    assert any(np.allclose(ln.get_xdata(), 0.12) for ln in ax.lines if len(ln.get_xdata()) == 2)
    assert "model input" in ax.get_title()
    assert _pyplot_figures() == before, "plot_eeg must not register figures with pyplot"


def test_plot_eeg_into_given_axes_and_unknown_channels(trial):
    data, sfreq, names = trial
    fig = Figure()
    ax = fig.add_subplot()
    names = names[:3] + ["MyAux"]  # a channel outside the montage: no spatial colours, still drawn
    out = viz.plot_eeg(data[:4] * 1e-6, sfreq, names, axes=ax, units="µV", scale=1e6)
    assert out is fig
    ys = [ln.get_ydata() for ln in ax.lines if len(ln.get_ydata()) == data.shape[1]]
    assert len(ys) == 4
    assert np.allclose(np.sort([y[0] for y in ys]), np.sort(data[:4, 0]))  # scaled back from volts


def test_plot_eeg_rejects_mismatched_names(trial):
    data, sfreq, names = trial
    with pytest.raises(ValueError, match="channel names"):
        viz.plot_eeg(data, sfreq, names[:10])


def test_plot_topomap_draws_the_chosen_latency(trial):
    data, sfreq, names = trial
    fig = viz.plot_topomap(data, sfreq, names, time_s=0.12, tmin=0.02)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "t = 120 ms"
    assert len(ax.images) == 1
    img = np.ma.masked_invalid(ax.images[0].get_array())
    assert float(img.max()) > 0.5 * np.abs(data).max()  # the occipital peak is on the map
    assert len(fig.axes) == 2  # map + colour bar
    with pytest.raises(ValueError, match="time_s"):
        viz.plot_topomap(data, sfreq, names, time_s=2.0, tmin=0.02)


def test_plot_topomap_needs_positions(trial):
    data, sfreq, _ = trial
    with pytest.raises(ValueError, match="positions"):
        viz.plot_topomap(data[:5], sfreq, [f"X{i}" for i in range(5)], time_s=0.1)


def test_plot_saliency_with_and_without_stimulus():
    rng = np.random.default_rng(1)
    sal = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32)  # model convention: (3, H, W) in [-1, 1]
    stim = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    fig = viz.plot_saliency(sal, stim)
    assert [ax.get_title() for ax in fig.axes] == ["Saliency map", "Stimulus"]
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (16, 16, 3)
    assert np.allclose(shown, (np.moveaxis(sal, 0, -1) + 1) / 2)
    assert np.allclose(fig.axes[1].images[0].get_array(), stim / 255.0)
    assert len(viz.plot_saliency(stim).axes) == 1


def test_plot_class_probs_orders_top_k():
    probs = np.full(40, 0.01)
    probs[[8, 3, 30]] = [0.5, 0.2, 0.1]
    fig = viz.plot_class_probs(probs, k=3, true_label=3)
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda b: -b.get_y())  # top to bottom
    assert [round(b.get_width(), 3) for b in bars] == [0.5, 0.2, 0.1]
    top_down = sorted(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]), reverse=True)
    assert [name for _, name in top_down] == [CLASS_NAMES[8], CLASS_NAMES[3], CLASS_NAMES[30]]
    assert bars[1].get_facecolor() != bars[0].get_facecolor()  # the true class stands out
    with pytest.raises(ValueError, match="probs"):
        viz.plot_class_probs(np.ones(7))


def test_plot_reconstruction_grid_layout():
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(6)]
    fig = viz.plot_reconstruction_grid(imgs[:2], imgs[2:4], imgs[4:], titles=["a", "b"])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Stimulus", "Saliency map", "Reconstruction"]
    assert fig.axes[3].get_ylabel() == "b"
    # unknown stimuli drop the column
    fig = viz.plot_reconstruction_grid(None, imgs[2:4], imgs[4:])
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="reconstructions"):
        viz.plot_reconstruction_grid(None, imgs[:2], imgs[:1])


def test_viz_does_not_import_gradio():
    import subprocess

    code = "import neuroimagen.viz, sys; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
