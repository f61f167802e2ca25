"""Plots of every stage: the EEG (butterfly, topomap), the saliency map, the class probabilities, and
stimulus / saliency / reconstruction grids.

MNE's conventions: matplotlib is imported inside the functions, only the object-oriented API is used
(no pyplot state, so concurrent app sessions cannot draw into each other's figures), every function
takes ``axes=None, show=False`` and returns the :class:`matplotlib.figure.Figure`. With ``show=True``
(interactive use) the figure is made by pyplot so that it can be shown; otherwise it is a bare
``Figure`` that the caller renders and drops (no figure manager keeps it alive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._check import check_range, validate_type
from .data.classes import CLASS_NAMES
from .data.montage import MONTAGE_NAME, make_info

__all__ = ["plot_eeg", "plot_topomap", "plot_saliency", "plot_class_probs", "plot_reconstruction_grid", "to_rgb"]


# --------------------------------------------------------------------------------------------------
# Helpers
def _new_figure(figsize: tuple[float, float], show: bool, nrows: int = 1, ncols: int = 1):
    """A figure with an ``nrows x ncols`` grid of axes; made by pyplot only when it is to be shown."""
    if show:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize, layout="constrained")
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _show(fig, show: bool) -> None:
    if show:
        import matplotlib.pyplot as plt

        plt.show()


def _check_eeg(data, sfreq, ch_names) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"Invalid EEG shape: expected (n_chans, n_times), but got {data.shape}.")
    if len(ch_names) != data.shape[0]:
        raise ValueError(f"Got {len(ch_names)} channel names for {data.shape[0]} channels of data.")
    check_range("sfreq", float(sfreq), 0.0, low_inclusive=False)
    return data


def _info(ch_names: Sequence[str], sfreq: float):
    """An EEG ``mne.Info`` with the actiCAP 128 positions wherever a channel name matches."""
    return make_info(list(ch_names), float(sfreq))


def _has_position(info) -> np.ndarray:
    locs = np.array([ch["loc"][:3] for ch in info["chs"]])
    return np.isfinite(locs).all(axis=1) & (np.abs(locs).sum(axis=1) > 0)


def to_rgb(image) -> np.ndarray:
    """An image as float RGB in [0, 1], shape (H, W, 3).

    Parameters
    ----------
    image : PIL.Image.Image | ndarray, shape (H, W, 3) | ndarray, shape (3, H, W)
        uint8 in [0, 255], or float in [0, 1]; a channels-first float array in [-1, 1] (the models'
        convention) is mapped to [0, 1].
    """
    if image is None:
        raise TypeError("image must be a PIL image or an array, got None instead.")
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    elif hasattr(image, "detach"):  # torch tensor
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = np.moveaxis(arr, 0, -1)
        if np.issubdtype(arr.dtype, np.floating) and arr.min() < 0:
            arr = (arr + 1) / 2
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"Invalid image shape: expected (H, W, 3) or (3, H, W), but got {arr.shape}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# EEG
def plot_eeg(data, sfreq: float, ch_names: Sequence[str], axes=None, show: bool = False, *, tmin: float = 0.0,
             units: str = "a.u.", scale: float = 1.0, time_s: float | None = None, title: str | None = None):
    """Butterfly plot of all channels, coloured by scalp position (MNE's spatial colours).

    Parameters
    ----------
    data : ndarray, shape (n_chans, n_times)
        One trial.
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str, length n_chans
        Channel names; channels of the actiCAP 128 montage get positions (others are drawn in black).
    axes : matplotlib.axes.Axes | None
        Where to draw; a new figure when None.
    show : bool
        Show the figure (pyplot) before returning.
    tmin : float
        Time of the first sample in seconds (the model's crop starts at 0.02 s).
    units : str
        Label of the amplitude axis, e.g. ``"µV"`` or ``"a.u."`` (z-scored model input).
    scale : float
        Factor applied to ``data`` before drawing (1e6 for volts shown in µV).
    time_s : float | None
        Draw a vertical marker at this latency (the topomap's).
    title : str | None
        Axes title (default: "EEG (n channels)").

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import mne

    data = _check_eeg(data, sfreq, ch_names)
    if axes is None:
        fig, ax = _new_figure((8.0, 3.2), show)
        ax = ax[0, 0]
    else:
        ax, fig = axes, axes.figure
    info = _info(ch_names, sfreq)
    evoked = mne.EvokedArray(data, info, tmin=tmin, verbose="error")
    # Spatial colours need every channel's position; uploads may carry channels outside the montage.
    spatial = bool(_has_position(info).all())
    with mne.utils.use_log_level("error"):
        evoked.plot(axes=ax, show=False, scalings=dict(eeg=scale), units=dict(eeg=units), spatial_colors=spatial,
                    time_unit="s", selectable=False, titles=dict(eeg=title or f"EEG ({len(ch_names)} channels)"))
    if time_s is not None:
        ax.axvline(time_s, color="k", linestyle="--", linewidth=1.0)
    _show(fig, show)
    return fig


def plot_topomap(data, sfreq: float, ch_names: Sequence[str], time_s: float, axes=None, show: bool = False, *,
                 tmin: float = 0.0, units: str = "a.u.", scale: float = 1.0, colorbar: bool = True,
                 title: str | None = None):
    """Scalp map of one latency, on the actiCAP 128 positions (``mne.viz.plot_topomap``).

    Parameters
    ----------
    data : ndarray, shape (n_chans, n_times)
    sfreq : float
    ch_names : list of str, length n_chans
        Channels without a montage position are left out of the map.
    time_s : float
        Latency in seconds (relative to ``tmin`` as in :func:`plot_eeg`); the nearest sample is drawn.
    axes : matplotlib.axes.Axes | None
    show : bool
    tmin, units, scale : see :func:`plot_eeg`
    colorbar : bool
        Add a colour bar (only when ``axes`` is None).
    title : str | None
        Default: "t = 123 ms".

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import mne

    data = _check_eeg(data, sfreq, ch_names)
    n_times = data.shape[1]
    tmax = tmin + (n_times - 1) / sfreq
    check_range("time_s", float(time_s), tmin - 0.5 / sfreq, tmax + 0.5 / sfreq)
    idx = int(np.clip(round((time_s - tmin) * sfreq), 0, n_times - 1))
    info = _info(ch_names, sfreq)
    keep = np.flatnonzero(_has_position(info))
    if len(keep) < 4:
        raise ValueError(f"A topomap needs channels with known positions: only {len(keep)} of {len(ch_names)} "
                         f"channel names are in the actiCAP 128 montage ({MONTAGE_NAME}).")
    info = mne.pick_info(info, keep)
    if axes is None:
        fig, ax = _new_figure((3.6, 3.2), show)
        ax = ax[0, 0]
    else:
        ax, fig = axes, axes.figure
        colorbar = False
    values = data[keep, idx] * scale
    vlim = float(np.abs(data[keep] * scale).max()) or 1.0  # one scale for the whole trial: maps comparable
    im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, vlim=(-vlim, vlim), cmap="RdBu_r",
                                 sensors=True, contours=4)
    ax.set_title(title or f"t = {1000 * (tmin + idx / sfreq):.0f} ms")
    if colorbar:
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label(units)
    _show(fig, show)
    return fig


# --------------------------------------------------------------------------------------------------
# Decoded outputs
def plot_saliency(saliency, stimulus=None, axes=None, show: bool = False, *, title: str = "Saliency map"):
    """The decoded pixel-level saliency map, beside the true stimulus when it is known.

    Parameters
    ----------
    saliency : PIL.Image.Image | ndarray, shape (H, W, 3) | ndarray, shape (3, H, W)
        See :func:`to_rgb` for the accepted value ranges.
    stimulus : same types as ``saliency`` | None
        The image that was seen.
    axes : matplotlib.axes.Axes | list of Axes | None
        One axes (saliency only) or two (saliency, stimulus).
    show : bool
    title : str

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    images = [(to_rgb(saliency), title)]
    if stimulus is not None:
        images.append((to_rgb(stimulus), "Stimulus"))
    if axes is None:
        fig, grid = _new_figure((2.6 * len(images), 2.8), show, 1, len(images))
        axs = list(grid[0])
    else:
        axs = list(np.atleast_1d(axes))
        if len(axs) != len(images):
            raise ValueError(f"plot_saliency needs {len(images)} axes for these images, got {len(axs)}.")
        fig = axs[0].figure
    for ax, (img, name) in zip(axs, images):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    _show(fig, show)
    return fig


def plot_class_probs(probs, k: int = 5, axes=None, show: bool = False, *, class_names: Sequence[str] | None = None,
                     true_label: int | None = None):
    """Horizontal bars of the ``k`` most probable classes (the true class, if given, in another colour).

    Parameters
    ----------
    probs : ndarray, shape (n_classes,)
        Class probabilities, in the order of ``class_names``.
    k : int
        How many classes to show.
    axes : matplotlib.axes.Axes | None
    show : bool
    class_names : list of str | None
        Default: the 40 EEG-ImageNet classes (``neuroimagen.data.classes.CLASS_NAMES``).
    true_label : int | None
        Index of the true class.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    probs = np.asarray(probs, dtype=np.float64).squeeze()
    names = list(CLASS_NAMES if class_names is None else class_names)
    if probs.ndim != 1 or len(probs) != len(names):
        raise ValueError(f"Invalid probs shape: expected ({len(names)},) for {len(names)} classes, "
                         f"but got {np.shape(probs)}.")
    validate_type("k", k, int)
    check_range("k", k, 1, len(names))
    order = np.argsort(probs)[::-1][:k]
    if axes is None:
        fig, ax = _new_figure((4.5, 0.35 * k + 0.9), show)
        ax = ax[0, 0]
    else:
        ax, fig = axes, axes.figure
    colors = ["tab:orange" if (true_label is not None and i == true_label) else "tab:blue" for i in order]
    ypos = np.arange(len(order))[::-1]  # most probable on top
    ax.barh(ypos, probs[order], color=colors)
    ax.set_yticks(ypos, [names[i] for i in order])
    ax.set_xlim(0, max(1e-6, float(probs[order].max())) * 1.1)
    ax.set_xlabel("probability")
    ax.set_title(f"Top-{k} classes")
    _show(fig, show)
    return fig


def plot_reconstruction_grid(stimuli, saliency_maps, reconstructions, titles: Sequence[str] | None = None,
                             show: bool = False):
    """One row per trial: stimulus (when known), saliency map, reconstruction.

    Parameters
    ----------
    stimuli : list of image | None, length n_trials, or None
        The seen images; an all-None (or None) list drops the column, a None entry leaves a blank cell.
    saliency_maps : list of image, length n_trials
    reconstructions : list of image, length n_trials
        Images as accepted by :func:`to_rgb` (PIL, uint8 or float arrays).
    titles : list of str | None, length n_trials
        Row labels (e.g. the decoded caption).
    show : bool

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    n = len(saliency_maps)
    if len(reconstructions) != n:
        raise ValueError(f"Got {n} saliency maps but {len(reconstructions)} reconstructions.")
    if stimuli is not None and len(stimuli) != n:
        raise ValueError(f"Got {len(stimuli)} stimuli for {n} saliency maps.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"Got {len(titles)} titles for {n} trials.")
    if n == 0:
        raise ValueError("plot_reconstruction_grid needs at least one trial.")
    with_stim = stimuli is not None and any(s is not None for s in stimuli)
    columns = (["Stimulus"] if with_stim else []) + ["Saliency map", "Reconstruction"]
    fig, grid = _new_figure((2.0 * len(columns) + (1.6 if titles else 0), 2.0 * n), show, n, len(columns))
    for i in range(n):
        cells = ([stimuli[i]] if with_stim else []) + [saliency_maps[i], reconstructions[i]]
        for j, img in enumerate(cells):
            ax = grid[i, j]
            if img is not None:
                ax.imshow(to_rgb(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j])
        if titles is not None:
            grid[i, 0].set_ylabel(titles[i], rotation=0, ha="right", va="center", fontsize=8)
    _show(fig, show)
    return fig
