"""Where a recording's channels sit, whatever the cap, and how the model's channels (the 128 actiCAP channels, or a
model's own montage) are made from them.

A file's channels are placed, in this order of trust:

1. **positions in the file** (its digitization or montage: FIF, BrainVision coordinates, EEGLAB chanlocs,
   ``positions`` in a ``.npz``), in the head frame;
2. **their names, read in the naming scheme the file uses**, detected before any name is matched:

   - BioSemi bank names (``A1`` .. ``H32``: at least 90 % of the names): the smallest BioSemi cap that
     holds them (16, 32, 64: ``A1`` is its first electrode, ``B1`` its 33rd; 128, 160, 256: by name).
     BioSemi's ``F3`` is bank F's third electrode, never the 10-20 ``F3``;
   - EGI names (``E1`` .. ``E256``, optionally ``Cz``/``VREF``): the HydroCel net of that size;
   - otherwise 10-05 names (10-20 and 10-10 are subsets): the model montage's own positions for its
     names (``brainproducts-RNP-BA-128``), EasyCap M1's, then MNE's ``fsaverage_1005`` for the others.

The model channels then come from the placed channels: a model channel recorded under its own 10-05 name
is taken as it is; every other one is interpolated with spherical splines (MNE ``interpolate_to``) from
every placed channel, around one fixed origin (the model montage's sphere), so a small or one-sided cap
does not bend the fit. Channels that cannot be placed are dropped and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .montage import get_montage, make_info, model_ch_names

BANK = re.compile(r"^([a-h])([1-9]|[12]\d|3[0-2])$")
EGI = re.compile(r"^e(\d{1,3})$")
SCHEME_SHARE = 0.9  # names of one scheme needed to read a file in that scheme
BIOSEMI_BY_INDEX = (16, 32, 64)  # caps whose MNE montages use 10-20 names, in BioSemi's A1.. order
BIOSEMI_BY_NAME = (128, 160, 256)
EGI_NETS = ((32, "GSN-HydroCel-32"), (64, "GSN-HydroCel-64_1.0"), (129, "GSN-HydroCel-129"),
            (257, "GSN-HydroCel-257"))
# 10-05 names not in the model montage: EasyCap's M1 layout (on the same idealised head as the actiCAP 128),
# then MNE's fsaverage 10-05 template (an MRI head) for the rarer ones
TEMPLATES_1005 = ("easycap-M1", "fsaverage_1005")
SPLINE_REG = 1e-5  # the regularisation MNE's interpolate_bads uses


def norm_name(name: str) -> str:
    """'EEG Fp1', 'fp1-Ref', ' FP1 ' -> 'fp1' (how other tools decorate the same electrode)."""
    n = str(name).strip().lower()
    for prefix in ("eeg ", "eeg-", "eeg_", "eeg"):
        if n.startswith(prefix) and len(n) > len(prefix):
            n = n[len(prefix):].strip()
            break
    for suffix in ("-ref", "-avg", "-a1", "-a2", "-m1", "-m2", "-fcz"):
        n = n.removesuffix(suffix)
    return n


@dataclass(frozen=True)
class ChannelPlacement:
    """Where a file's channels sit.

    Attributes
    ----------
    scheme : str
        How they were placed, in words (e.g. ``"BioSemi bank names (biosemi64)"``).
    positions : ndarray, shape (n_chans, 3)
        Head-frame positions in metres; NaN rows for channels that could not be placed.
    same_as_model : dict of str to int
        Model channel name -> file row recorded at that electrode under its own name (10-05 names only).
    """

    scheme: str
    positions: np.ndarray
    same_as_model: dict[str, int]

    @property
    def placed(self) -> np.ndarray:
        return np.isfinite(self.positions).all(axis=1)


def _head_positions(montage) -> dict[str, np.ndarray]:
    """Channel positions of a montage in MNE's head frame (as ``set_montage`` puts them into an Info)."""
    import mne

    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    with mne.utils.use_log_level("error"):
        info.set_montage(montage)
    return {ch["ch_name"]: np.array(ch["loc"][:3], float) for ch in info["chs"]}


@lru_cache(maxsize=16)
def _montage_positions(name: str) -> dict[str, np.ndarray]:
    import mne

    with mne.utils.use_log_level("error"):
        return _head_positions(mne.channels.make_standard_montage(name))


@lru_cache(maxsize=1)
def _model_positions() -> dict[str, np.ndarray]:
    return _head_positions(get_montage())


def _lower(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {norm_name(k): v for k, v in d.items()}


def _bank_index(name: str) -> int:
    m = BANK.match(name)
    return 32 * (ord(m.group(1)) - ord("a")) + int(m.group(2)) - 1


def _by_names(names: list[str]) -> tuple[str, dict[int, np.ndarray]]:
    """(scheme, row -> position) from the channel names, in the naming scheme most of them follow."""
    n = len(names)
    if n and sum(bool(BANK.match(x)) for x in names) >= SCHEME_SHARE * n:
        top = max(_bank_index(x) for x in names if BANK.match(x)) + 1
        size = next((s for s in BIOSEMI_BY_INDEX + BIOSEMI_BY_NAME if s >= top), 256)
        cap = f"biosemi{size}"
        pos = _montage_positions(cap)
        if size in BIOSEMI_BY_INDEX:  # their MNE montage lists 10-20 names in the order of A1, A2, ...
            ordered = list(pos.values())
            rows = {i: ordered[_bank_index(x)] for i, x in enumerate(names) if BANK.match(x)}
        else:
            low = _lower(pos)
            rows = {i: low[x] for i, x in enumerate(names) if x in low}
        return f"BioSemi bank names ({cap})", rows
    if n and sum(bool(EGI.match(x)) or x in ("cz", "vref") for x in names) >= SCHEME_SHARE * n:
        top = max((int(EGI.match(x).group(1)) for x in names if EGI.match(x)), default=0)
        size, net = next(((s, m) for s, m in EGI_NETS if s >= top), EGI_NETS[-1])
        low = _lower(_montage_positions(net))
        if "vref" in names and "cz" in low:
            low["vref"] = low["cz"]
        return f"EGI names ({net})", {i: low[x] for i, x in enumerate(names) if x in low}
    known = _known_1005()
    rows = {i: known.get(x) for i, x in enumerate(names)}
    return "10-05 names", {i: p for i, p in rows.items() if p is not None}


def place_channels(ch_names: list[str], positions: np.ndarray | None = None,
                   model: tuple[str, ...] | list[str] | None = None) -> ChannelPlacement:
    """Place a file's channels: its own positions first, else their names in the scheme they follow.

    Parameters
    ----------
    ch_names : list of str
    positions : ndarray, shape (n_chans, 3) | None
        Head-frame positions in metres from the file (NaN or all-zero rows: not known).
    model : sequence of str | None
        The model's channels, found under their own names (default: the 128 actiCAP channels).
    """
    names = [norm_name(x) for x in ch_names]
    pos = np.full((len(names), 3), np.nan)
    known = np.zeros(len(names), bool)
    if positions is not None:
        p = np.asarray(positions, float)
        known = np.isfinite(p).all(axis=1) & (np.abs(p).sum(axis=1) > 0)
        pos[known] = p[known]
    scheme, by_name = _by_names([x for x, k in zip(names, known) if not k]) if not known.all() else ("", {})
    unknown_rows = np.flatnonzero(~known)
    for j, p in by_name.items():
        pos[unknown_rows[j]] = p
    parts = (["file positions"] if known.any() else []) + ([scheme] if by_name else [])
    model = {norm_name(m): m for m in (model_ch_names() if model is None else model)}
    same: dict[str, int] = {}
    if _by_names(names)[0] == "10-05 names":  # a model channel under its own name is that electrode
        for i, x in enumerate(names):
            if x in model:
                same.setdefault(model[x], i)
    return ChannelPlacement(" and ".join(parts) or "no known names or positions", pos, same)


@lru_cache(maxsize=1)
def model_origin() -> np.ndarray:
    """The centre of the sphere fitted to the model montage (head frame, metres): the splines' origin."""
    import mne

    with mne.utils.use_log_level("error"):
        _, origin, _ = mne.bem.fit_sphere_to_headshape(make_info(), dig_kinds=("eeg",), units="m")
    return np.asarray(origin, float)


@lru_cache(maxsize=1)
def _known_1005() -> dict[str, np.ndarray]:
    """Normalised 10-05 name -> head position: the model montage's, then EasyCap M1's, then fsaverage's."""
    known = _lower(_model_positions())
    for template in TEMPLATES_1005:
        known = {**_lower(_montage_positions(template)), **known}  # earlier sources win
    return known


def channel_positions(names) -> np.ndarray:
    """Head-frame positions (n, 3) of channels by their 10-05 names, as :func:`place_channels` reads names (the
    model montage's positions first): where a model of any montage has its channels."""
    known = _known_1005()
    unknown = [n for n in names if norm_name(n) not in known]
    if unknown:
        raise ValueError(f"No position is known for the channels {unknown[:8]}: a model's channels need 10-05 names "
                         f"(e.g. 'O1', 'POz') to interpolate them from a recording.")
    return np.array([known[norm_name(n)] for n in names])


def interpolation_weights(positions: np.ndarray, targets: tuple[str, ...]) -> np.ndarray:
    """Spherical-spline weights from channels at ``positions`` to the model channels ``targets``.

    Parameters
    ----------
    positions : ndarray, shape (n_from, 3)
    targets : tuple of str
        Model channel names (10-05 names: :func:`channel_positions`).

    Returns
    -------
    weights : ndarray, shape (len(targets), n_from)
        Read-only; cached, because the spline matrix costs 0.1-1.5 s and uploads from one cap repeat.
    """
    return spline_weights(positions, channel_positions(targets))


def spline_weights(pos_from: np.ndarray, pos_to: np.ndarray) -> np.ndarray:
    """Spherical-spline weights (MNE ``interpolate_to``, around :func:`model_origin`) from electrodes at
    ``pos_from`` (n_from, 3) to electrodes at ``pos_to`` (n_to, 3), head frame: shape (n_to, n_from), cached."""
    a, b = (np.round(np.asarray(p, float), 6) for p in (pos_from, pos_to))
    return _weights(a.tobytes(), a.shape[0], b.tobytes(), b.shape[0])


@lru_cache(maxsize=64)
def _weights(from_bytes: bytes, n_from: int, to_bytes: bytes, n_to: int) -> np.ndarray:
    import mne

    pos_from = np.frombuffer(from_bytes).reshape(n_from, 3)
    pos_to = np.frombuffer(to_bytes).reshape(n_to, 3)
    names = [f"src{i}" for i in range(n_from)]
    targets = [f"dst{i}" for i in range(n_to)]
    info = mne.create_info(names, 1000.0, "eeg")
    with mne.utils.use_log_level("error"):
        info.set_montage(mne.channels.make_dig_montage(ch_pos=dict(zip(names, pos_from)), coord_frame="head"))
        raw = mne.io.RawArray(np.eye(n_from), info, verbose="error")
        target = mne.channels.make_dig_montage(ch_pos=dict(zip(targets, pos_to)), coord_frame="head")
        out = raw.interpolate_to(target, origin=model_origin(), method="spline", reg=SPLINE_REG)
    weights = out.get_data()[[out.ch_names.index(t) for t in targets]]
    weights.setflags(write=False)
    return weights
