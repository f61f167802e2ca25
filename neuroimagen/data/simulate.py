"""EEG simulator: an MNE forward model of a 128-channel (or any cap's) recording of the stimulus set.

Writes the EEG-ImageNet file format (docs/CONTRACTS.md; the published EEG-ImageNet files) so every model trains on
simulated or real data without code changes::

    python -m neuroimagen.data simulate --stimuli data/stimuli --out data/sim_demo.pth --preset demo
    python -m neuroimagen.data simulate --stimuli data/stimuli --out data/sim_realistic.pth --preset realistic
    python -m neuroimagen.data simulate --stimuli data/stimuli --out data/sim_new_subjects.pth --subjects 7-10

The model (parameters and the literature behind them: docs/simulator.md):

- **Head**: the actiCAP 128 montage (``brainproducts-RNP-BA-128``), a 4-shell spherical head model
  (``mne.make_sphere_model``) and ``mne.make_forward_solution`` on discrete dipoles. ``montage=`` records
  with another cap (``neuroimagen.data.caps``: its own positions, names and forward model), in the same
  volts.
- **Early visual cortex**: 9 dipoles near the occipital pole, one per cell of a 3 x 3 grid of the visual
  field, placed retinotopically (left field -> right hemisphere, upper field -> below the calcarine
  sulcus, so its polarity flips). Each is driven by its cell's luminance contrast against the
  background and its colour-opponent energy, with P1 (~100 ms) and N1 (~170 ms) waveforms; 3 more
  full-field dipoles follow the whole screen's mean luminance and signed colour opponency.
- **Ventral / lateral occipito-temporal cortex**: 8 dipoles whose amplitudes code the class's meaning:
  the class's MiniLM label-caption embedding through a fixed random projection, with N170- (170 ms),
  P2- (250 ms) and P300-like (350 ms) oscillatory-enveloped waveforms (theta/alpha band, so the code
  survives the published 5-95 Hz band-pass).
- **Subjects**: a population (sources, class code, retinotopic mix) and its people: per subject, dipole
  orientation jitter, gains and a latency shift, from the subject's own random stream for subjects 7 on
  (``--subjects 7-10``: new people of the population the founding subjects 1-6 came from).
- **Noise**: 1/f ("pink") background from 40 random sources, posterior alpha (8-12 Hz), sensor white
  noise, 50 Hz line noise and occasional frontal blinks; trial-to-trial amplitude jitter.
- **Block drift** (``--block-drift``, off by default): EEG-ImageNet showed each class in one block;
  slow per-block changes (a drifting topography and per-channel gains) then mark the class by its
  recording time (Li et al., TPAMI 2020).

Each trial is simulated in volts at 1 kHz from stimulus onset (with padding for the filter's edges), then,
as in the published ``eeg_5_95_std.pth``, band-passed 5-95 Hz and standardized, and stored float32.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._check import check_option, check_range
from .caps import cap_info
from .classes import CLASSES, SYNSETS, label_caption
from .montage import SFREQ, make_info
from .preprocessing import bandpass, standardize
from .stimuli import load_stimulus_images, load_stimulus_metadata

N_SAMPLES = 500  # samples from stimulus onset, as the published segments (about 500, variable)
PAD = 150  # samples simulated before and after, so the band-pass has no edge effects in the trial
GRID = 3  # retinotopic cells per side
N_VENTRAL = 8
N_NOISE_SOURCES = 40
FOUNDING_SUBJECTS = 6  # drawn from the population's stream, in the order the shipped data set used
CLASS_EMBEDDINGS = Path(__file__).with_name("class_embeddings.npy")


@dataclass(frozen=True)
class Preset:
    """Amplitudes in volts at the sensor with the largest lead field of a source (see docs/simulator.md)."""

    early_uv: float  # P1/N1 amplitude per unit of cell contrast
    ventral_uv: float  # class-coded components
    background_uv: float  # 1/f background, RMS per channel
    alpha_uv: float
    sensor_uv: float  # white sensor noise RMS
    line_uv: float
    blink_prob: float
    blink_uv: float
    trial_jitter: float  # relative trial-to-trial amplitude variability of the evoked components


PRESETS = {
    # Clean enough that single trials carry the stimulus: a convincing demo of the method.
    "demo": Preset(early_uv=6.0, ventral_uv=5.0, background_uv=6.0, alpha_uv=3.0, sensor_uv=1.0, line_uv=1.0,
                   blink_prob=0.02, blink_uv=60.0, trial_jitter=0.2),
    # Single-trial SNR of visual evoked potentials as published (about -10 to -20 dB per channel).
    "realistic": Preset(early_uv=3.0, ventral_uv=2.5, background_uv=15.0, alpha_uv=10.0, sensor_uv=2.0,
                        line_uv=3.0, blink_prob=0.1, blink_uv=100.0, trial_jitter=0.4),
    # THINGS-EEG2 scale: the realistic noise with a weaker concept code, calibrated so that the zero-shot
    # protocol (neuroimagen.evaluation.zero_shot) lands near the published numbers (docs/things-eeg2.md).
    "things-realistic": Preset(early_uv=3.0, ventral_uv=4.5, background_uv=15.0, alpha_uv=10.0, sensor_uv=2.0,
                               line_uv=3.0, blink_prob=0.1, blink_uv=100.0, trial_jitter=0.4),
}


def user_cache_dir() -> Path:
    """The folder where the library keeps what it computes once: ``$NEUROIMAGEN_CACHE``, else
    ``$XDG_CACHE_HOME/neuroimagen``, else ``~/.cache/neuroimagen`` (never the installed package)."""
    if os.environ.get("NEUROIMAGEN_CACHE"):
        return Path(os.environ["NEUROIMAGEN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "neuroimagen"


@lru_cache(maxsize=1)
def class_embeddings() -> np.ndarray:
    """The 40 label captions' pooled MiniLM embeddings, (40, 384): the file the package ships (float16), else
    computed once and kept in :func:`user_cache_dir` (float16)."""
    cached = user_cache_dir() / CLASS_EMBEDDINGS.name
    for f in (CLASS_EMBEDDINGS, cached):
        if f.is_file():
            return np.load(f).astype(np.float64)
    from .captions import CaptionEncoder, pool  # torch and transformers: only when the file is missing

    emb = pool(CaptionEncoder()([label_caption(c.index) for c in CLASSES])).numpy()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, emb.astype(np.float16))
    except OSError:  # a read-only home: computed again in the next process
        pass
    return emb.astype(np.float64)


def _wave(t: np.ndarray, latency: float, width: float, freq: float | None = None) -> np.ndarray:
    """A Gaussian bump at ``latency`` s (``freq``: times a cosine, i.e. an oscillatory evoked burst)."""
    env = np.exp(-0.5 * ((t - latency) / width) ** 2)
    return env if freq is None else env * np.cos(2 * np.pi * freq * (t - latency))


def _pink(rng: np.random.Generator, shape: tuple[int, ...], exponent: float = 1.0) -> np.ndarray:
    """Noise with a 1/f^exponent power spectrum along the last axis, unit RMS."""
    n = shape[-1]
    spec = rng.standard_normal(shape[:-1] + (n // 2 + 1,)) + 1j * rng.standard_normal(shape[:-1] + (n // 2 + 1,))
    f = np.fft.rfftfreq(n, 1 / SFREQ)
    f[0] = f[1]
    x = np.fft.irfft(spec / f ** (exponent / 2), n=n, axis=-1)
    return x / x.std(axis=-1, keepdims=True)


def stimulus_features(images: np.ndarray) -> np.ndarray:
    """Per retinotopic cell: luminance contrast and two colour-opponent energies, (n, GRID*GRID, 3).

    Contrast is measured against the image's border colour (the background), so a drawn object
    drives the cells it covers.
    """
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).mean(axis=1)  # (n, 3)
    diff = x - border[:, None, None, :]
    lum = np.abs(diff @ np.array([0.299, 0.587, 0.114]))
    rg = np.abs(diff[..., 0] - diff[..., 1])
    by = np.abs(diff[..., 2] - 0.5 * (diff[..., 0] + diff[..., 1]))
    feats = np.stack([lum, rg, by], axis=-1)  # (n, h, w, 3)
    cells = feats[:, : h - h % GRID, : w - w % GRID].reshape(n, GRID, h // GRID, GRID, w // GRID, 3)
    return cells.mean(axis=(2, 4)).reshape(n, GRID * GRID, 3) * 4.0  # ~unit scale for a covered cell


def global_features(images: np.ndarray) -> np.ndarray:
    """Whole-field mean luminance and signed colour opponency (R-G, B-Y), centred, (n, 3).

    Drives the full-field sources: a brighter or more saturated screen changes the early VEP amplitude.
    """
    x = images.astype(np.float64).mean(axis=(1, 2)) / 255.0  # (n, 3)
    lum = x @ np.array([0.299, 0.587, 0.114]) - 0.6
    rg = x[:, 0] - x[:, 1]
    by = x[:, 2] - 0.5 * (x[:, 0] + x[:, 1])
    return np.stack([lum, rg, by], axis=1) * 3.0


@dataclass(frozen=True)
class Subject:
    """One simulated person: how their head and brain differ from the population's (see :meth:`EEGSimulator.subject`)."""

    number: int  # 1-based
    latency_shift: float  # s, added to every evoked latency
    gains: np.ndarray  # (n_sources,), log-normal amplitude of each source
    orientations: np.ndarray  # (n_sources, 3), unit dipole orientations (the population's, jittered)
    topography: np.ndarray  # (n_chans, n_sources), lead field per source on the simulator's cap, in units of
    # the source's peak |lead field| over the actiCAP 128 (so amplitudes in volts agree across caps)


def _source_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
    """The population's sources: positions ``rr`` and unit orientations ``nn`` (n_sources, 3), head frame, metres,
    and the slice of each kind: early visual (retinotopic cells, then luminance and colour), ventral (class),
    alpha (parieto-occipital) and noise (random: the only draws from ``rng``)."""
    early, early_nn = [], []
    for r in range(GRID):  # rows top -> bottom of the visual field
        for c in range(GRID):  # columns left -> right
            x = 0.022 * (1 - c)  # left field -> right hemisphere (x > 0)
            z = 0.012 * (r - 1)  # upper field -> lower bank of the calcarine sulcus
            early.append([x, -0.078, 0.005 + z])
            early_nn.append([0.25 * (1 - c), -1.0, -0.6 * (1 - r) + 0.2])  # polarity flips across the meridian
    ventral = [[s * 0.045, -0.055 + 0.012 * k, -0.015 + 0.006 * k] for s in (-1, 1) for k in range(N_VENTRAL // 2)]
    ventral_nn = [[s * 0.6, -0.5, 0.3] for s in (-1, 1) for _ in range(N_VENTRAL // 2)]
    full = [[-0.015, -0.08, 0.02], [0.015, -0.08, 0.02], [0.0, -0.075, -0.01]]  # luminance, R-G, B-Y
    full_nn = [[-0.2, -1.0, 0.3], [0.2, -1.0, 0.3], [0.0, -1.0, -0.4]]
    early, early_nn = early + full, early_nn + full_nn
    alpha = [[-0.03, -0.065, 0.035], [0.03, -0.065, 0.035]]
    alpha_nn = [[0.0, -0.6, 0.8], [0.0, -0.6, 0.8]]
    d = rng.standard_normal((N_NOISE_SOURCES, 3))
    noise_rr = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0.03, 0.07, (N_NOISE_SOURCES, 1))
    noise_nn = rng.standard_normal((N_NOISE_SOURCES, 3))
    rr = np.array(early + ventral + alpha + noise_rr.tolist())
    nn = np.array(early_nn + ventral_nn + alpha_nn + noise_nn.tolist())
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    n_early, n_ventral = len(early), len(ventral)
    slices = {"early": slice(0, n_early), "ventral": slice(n_early, n_early + n_ventral),
              "alpha": slice(n_early + n_ventral, n_early + n_ventral + 2),
              "noise": slice(n_early + n_ventral + 2, len(rr))}
    return rr, nn, slices


class EEGSimulator:
    """Simulate single EEG trials for stimulus images.

    A population (source layout, noise sources, class code, retinotopic mix: fixed by ``seed``) and its
    subjects, each a person of that population (orientation jitter, gains, latency shift), made on first
    use for any subject number >= 1. Subjects 1-6 are the "founding" subjects the shipped data set was
    simulated with; subject 7 onwards are new people of the same population, each from their own random
    stream, so a subject's number alone fixes who they are.

    Parameters
    ----------
    preset : str
        ``"demo"`` or ``"realistic"`` (noise and amplitude settings, see :data:`PRESETS`).
    n_subjects : int
        Subjects whose parameters are made now (1..n_subjects); any other is made when first simulated.
        Changes nothing that is simulated.
    seed : int
        Fixes the population and its subjects; trial noise comes from the ``rng`` given to :meth:`simulate`.
    block_drift : bool
        Add slow per-block drifts (see :meth:`simulate`'s ``blocks``).
    montage : str | mne.Info | mne.channels.DigMontage | None
        The cap recorded with: the same sources, subjects and class code seen through that cap's own
        forward model (positions and names). ``None``: the model's actiCAP 128. A name is one of
        :data:`neuroimagen.data.caps.STANDARD_CAPS` or an MNE built-in montage (see
        :func:`neuroimagen.data.caps.cap_info`).
    """

    def __init__(self, preset: str = "demo", n_subjects: int = 6, seed: int = 0, block_drift: bool = False,
                 montage=None):
        import mne

        check_option("preset", preset, PRESETS)
        check_range("n_subjects", n_subjects, 0)
        self.preset_name, self.preset = preset, PRESETS[preset]
        self.n_subjects, self.seed, self.block_drift = n_subjects, seed, block_drift
        # The population's stream. Its draw order is the one the shipped data set was made with: noise
        # sources, the founding subjects, then the class code and the retinotopic mix.
        rng = np.random.default_rng([seed, 7919])
        self.info = make_info() if montage is None else cap_info(montage)
        self.n_chans = len(self.info.ch_names)

        rr, nn, self._sl = _source_layout(rng)
        n_early = self._sl["early"].stop
        n_ventral = self._sl["ventral"].stop - n_early

        sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=0.095, verbose=False)
        src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), sphere=sphere, verbose=False)

        def lead_fields(info):  # V per A m, free orientation: (n_chans, n_sources, 3)
            fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, eeg=True, meg=False,
                                            verbose=False)
            return fwd["sol"]["data"].reshape(len(info.ch_names), len(rr), 3)

        self._gain_free = lead_fields(self.info)
        # Topographies are in units of each source's peak over the actiCAP 128, whatever the cap.
        self._gain_ref = self._gain_free if montage is None else lead_fields(make_info())
        self._rr, self._nn = rr, nn

        # The founding subjects 1-6, always drawn here (whatever n_subjects) so the code after them is fixed.
        self._subjects: dict[int, Subject] = {}
        latency_shift = rng.uniform(-0.012, 0.012, FOUNDING_SUBJECTS)
        gains = rng.lognormal(0.0, 0.15, (FOUNDING_SUBJECTS, len(rr)))
        for k in range(FOUNDING_SUBJECTS):
            self._subjects[k + 1] = self._make_subject(k + 1, latency_shift[k], gains[k],
                                                       nn + rng.normal(0.0, 0.25, nn.shape))

        # Class code: MiniLM embedding -> fixed random projection -> amplitudes of the ventral components.
        emb = class_embeddings()
        emb = emb - emb.mean(axis=0)
        proj = rng.standard_normal((emb.shape[1], n_ventral * 3))
        code = emb @ proj
        self.class_code = (code / code.std(axis=0, keepdims=True)).reshape(len(CLASSES), n_ventral, 3)
        self.code_projection = proj  # (384, n_ventral * 3): how any text embedding becomes a ventral code
        self.early_mix = rng.normal(1.0, 0.3, (n_early, 3))  # how luminance / colour drive each cell's dipole
        self.frontal = np.exp(-((np.array([self.info["chs"][i]["loc"][:3] for i in range(self.n_chans)])
                                 - [0.0, 0.09, 0.02]) ** 2).sum(axis=1) / (2 * 0.035 ** 2))
        for s in range(FOUNDING_SUBJECTS + 1, n_subjects + 1):
            self.subject(s)

    def _make_subject(self, number: int, latency_shift: float, gains: np.ndarray, ori: np.ndarray) -> Subject:
        ori = ori / np.linalg.norm(ori, axis=1, keepdims=True)
        peak = np.abs(np.einsum("csk,sk->cs", self._gain_ref, ori)).max(axis=0, keepdims=True)
        topo = np.einsum("csk,sk->cs", self._gain_free, ori) / peak
        for a in (gains, ori, topo):
            a.setflags(write=False)  # a subject is made once and shared by every later trial
        return Subject(number, float(latency_shift), gains, ori, topo)

    def subject(self, number: int) -> Subject:
        """Subject ``number`` (>= 1) of the population, made on first use.

        Subjects 1-6 come from the population's stream (as the shipped data set); subject ``s >= 7`` from
        its own, ``np.random.default_rng([seed, 7919, s])``: a new person of the same population.
        """
        number = int(number)
        if number < 1:
            raise ValueError(f"Subject numbers start at 1, got {number}.")
        if number not in self._subjects:
            r = np.random.default_rng([self.seed, 7919, number])
            self._subjects[number] = self._make_subject(
                number, r.uniform(-0.012, 0.012), r.lognormal(0.0, 0.15, len(self._nn)),
                self._nn + r.normal(0.0, 0.25, self._nn.shape))
        return self._subjects[number]

    def concept_code(self, embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The ventral code of any concept from its MiniLM text embedding, as :attr:`class_code` is made for the
        40 classes: the embedding centred on the ``reference`` population of concepts' mean, through the same
        fixed random projection, scaled by the reference codes' spread.

        Parameters
        ----------
        embeddings : ndarray, shape (n, 384)
            Pooled MiniLM embeddings of the concepts to code (e.g. of their names).
        reference : ndarray, shape (m, 384)
            The population of concepts the code is centred and scaled on (fixed, so that a concept's code
            depends on its own embedding only, not on which other concepts are simulated with it).

        Returns
        -------
        codes : ndarray, shape (n, n_ventral, 3)
            Pass as ``codes=`` to :meth:`simulate`.
        """
        embeddings, reference = np.asarray(embeddings, np.float64), np.asarray(reference, np.float64)
        dim = self.code_projection.shape[0]
        for name, a in (("embeddings", embeddings), ("reference", reference)):
            if a.ndim != 2 or a.shape[1] != dim:
                raise ValueError(f"{name} must be text embeddings of shape (n, {dim}), got {a.shape}.")
        center = reference.mean(axis=0)
        scale = ((reference - center) @ self.code_projection).std(axis=0, keepdims=True)
        code = (embeddings - center) @ self.code_projection / scale
        return code.reshape(len(embeddings), *self.class_code.shape[1:])

    # ------------------------------------------------------------------------------------------
    def simulate(self, images: np.ndarray, class_indices, subjects, rng: np.random.Generator, raw: bool = False,
                 blocks=None, n_samples: int = N_SAMPLES, tmin: float = 0.0, codes=None) -> np.ndarray:
        """Simulate one trial per image.

        Parameters
        ----------
        images : ndarray, shape (n, H, W, 3), uint8
            The stimuli seen.
        class_indices : array-like of int, shape (n,) | None
            The 40 classes' codes (:attr:`class_code`); None when ``codes`` are given.
        subjects : array-like of int, shape (n,)
            1-based subject numbers, any >= 1 (see :meth:`subject`).
        rng : np.random.Generator
            Trial noise.
        raw : bool
            ``False``: the published file's version (5-95 Hz band-pass, standardized). ``True``: broadband
            volts, as a recording would arrive.
        blocks : array-like of int, shape (n,) | None
            Recording block of each trial; with ``block_drift`` trials of one block share a drift.
        n_samples : int
            Samples at 1 kHz from ``tmin``.
        tmin : float
            Time of the first sample relative to stimulus onset, in seconds (negative: a pre-stimulus
            baseline, as THINGS-EEG2's epochs from -0.2 s).
        codes : ndarray, shape (n, n_ventral, 3) | None
            Each trial's ventral code (e.g. :meth:`concept_code` of concepts outside the 40 classes), in place
            of ``class_indices``.

        Returns
        -------
        eeg : ndarray, shape (n, n_chans, n_samples), float32
            Channels of ``self.info`` (the cap's names and order).
        """
        images, codes, subj = self._check_trials(images, class_indices, subjects, codes)
        p = self.preset
        n_tot = n_samples + 2 * PAD
        t = (np.arange(n_tot) - PAD) / SFREQ + tmin
        feats = stimulus_features(images)  # (n, 9, 3)
        glob = global_features(images)  # (n, 3)
        out = np.empty((len(images), self.n_chans, n_samples), dtype=np.float32)
        uv = 1e-6
        for i in range(len(images)):
            subject = self.subject(subj[i])
            topo = subject.topography * subject.gains
            lat = subject.latency_shift + rng.normal(0.0, 0.004)
            jit = 1.0 + p.trial_jitter * rng.standard_normal()
            src = self._evoked_sources(feats[i], glob[i], codes[i], lat, jit, t)
            # Alpha: 8-12 Hz, random phase and amplitude, posterior.
            f_alpha = rng.uniform(8.0, 12.0)
            src[self._sl["alpha"]] = (p.alpha_uv * uv * rng.uniform(0.3, 1.5, (2, 1))
                                      * np.sin(2 * np.pi * f_alpha * t + rng.uniform(0, 2 * np.pi, (2, 1))))
            # 1/f background from random sources.
            noise_src = _pink(rng, (N_NOISE_SOURCES, n_tot))
            src[self._sl["noise"]] = p.background_uv * uv * noise_src / np.sqrt(N_NOISE_SOURCES / 4)
            x = topo @ src
            # Sensors: white noise, line noise, blinks.
            x += p.sensor_uv * uv * rng.standard_normal(x.shape)
            x += p.line_uv * uv * rng.uniform(0.5, 1.5, (self.n_chans, 1)) * np.sin(
                2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
            if rng.random() < p.blink_prob:
                x += p.blink_uv * uv * self.frontal[:, None] * _wave(t, rng.uniform(0.0, 0.5), 0.07)[None]
            if self.block_drift and blocks is not None:
                x += self._drift(int(blocks[i]), subject.number - 1, t)
            if not raw:
                x = standardize(bandpass(x, SFREQ))
            out[i] = x[:, PAD:PAD + n_samples]
        return out

    def evoked(self, images: np.ndarray, class_indices, subjects, n_samples: int = N_SAMPLES) -> np.ndarray:
        """The noise-free evoked response (early visual + class-coded parts) of each trial, in volts.

        What :meth:`simulate` adds noise to, at the subject's own latency and without trial jitter:
        the pattern a subject's average over many repetitions approaches.

        Returns
        -------
        evoked : ndarray, shape (n, n_chans, n_samples), float64
        """
        images, codes, subj = self._check_trials(images, class_indices, subjects)
        t = np.arange(n_samples) / SFREQ
        feats, glob = stimulus_features(images), global_features(images)
        out = np.empty((len(images), self.n_chans, n_samples))
        for i in range(len(images)):
            subject = self.subject(subj[i])
            src = self._evoked_sources(feats[i], glob[i], codes[i], subject.latency_shift, 1.0, t)
            out[i] = (subject.topography * subject.gains) @ src
        return out

    def _check_trials(self, images, class_indices, subjects, codes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images, each trial's ventral code (n, n_ventral, 3) and subject numbers, checked."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (n, H, W, 3), got {images.shape}.")
        subj = np.asarray(subjects, dtype=int)
        if (class_indices is None) == (codes is None):
            raise ValueError("Give either class_indices (the 40 classes) or codes (any concept's ventral code), "
                             "not both or neither.")
        if codes is not None:
            codes = np.asarray(codes, dtype=np.float64)
            if codes.shape != (len(images), *self.class_code.shape[1:]):
                raise ValueError(f"codes must have shape (n_trials={len(images)}, {self.class_code.shape[1]}, "
                                 f"{self.class_code.shape[2]}), got {codes.shape}.")
            n_cls, cls = len(codes), None
        else:
            cls = np.asarray(class_indices, dtype=int)
            n_cls = len(cls)
        if n_cls != len(images) or len(subj) != len(images):
            raise ValueError(f"Got {len(images)} images, {n_cls} class indices and {len(subj)} subjects: "
                             f"expected one of each per trial.")
        if subj.min(initial=1) < 1:
            raise ValueError(f"Subject numbers start at 1, got {sorted(set(subj.tolist()))}.")
        if cls is not None:
            if cls.min(initial=0) < 0 or cls.max(initial=0) >= len(CLASSES):
                raise ValueError(f"class_indices must be in 0..{len(CLASSES) - 1}, got {sorted(set(cls.tolist()))}.")
            codes = self.class_code[cls]
        return images, codes, subj

    def _evoked_sources(self, feats: np.ndarray, glob: np.ndarray, code: np.ndarray, lat: float, jit: float,
                        t: np.ndarray) -> np.ndarray:
        """Source time courses (n_sources, n_times) of one trial's evoked parts; the other sources are zero."""
        p, uv = self.preset, 1e-6
        # Early visual: P1 (100 ms) and N1 (170 ms), per retinotopic cell.
        drive = np.concatenate([(feats * self.early_mix[:GRID * GRID]).sum(axis=1), glob])  # (12,)
        early_wave = _wave(t, 0.100 + lat, 0.018, None) - 0.8 * _wave(t, 0.170 + lat, 0.025, None)
        src = np.zeros((len(self._rr), len(t)))
        src[self._sl["early"]] = p.early_uv * uv * jit * drive[:, None] * early_wave[None]
        # Ventral: class-coded oscillatory components at N170 / P2 / P300 latencies.
        w = np.stack([_wave(t, 0.170 + lat, 0.030, 8.0), _wave(t, 0.250 + lat, 0.040, 6.0),
                      _wave(t, 0.350 + lat, 0.050, 5.0)])
        src[self._sl["ventral"]] = p.ventral_uv * uv * jit * (code @ w)
        return src

    def _drift(self, block: int, subject: int, t: np.ndarray) -> np.ndarray:
        """A block's drift: a slowly drifting topography and an in-band ramp, fixed by (seed, subject, block)."""
        r = np.random.default_rng([self.seed, 104729, subject, block])
        pattern = r.standard_normal(self.n_chans)
        slope = r.normal(0.0, 1.0)
        burst = _wave(t, r.uniform(0.1, 0.4), 0.05, r.uniform(6.0, 12.0))
        return 4e-6 * pattern[:, None] * (slope * (t - t.mean()) / np.ptp(t) + burst)[None]


# ----------------------------------------------------------------------------------------------
def make_image_splits(image_classes: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Split image indices 80/10/10 by class (stratified), deterministic for ``seed``."""
    rng = np.random.default_rng([seed, 31337])
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(image_classes):
        idx = rng.permutation(np.flatnonzero(image_classes == c))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        parts["test"] += idx[:n_test].tolist()
        parts["val"] += idx[n_test:n_test + n_val].tolist()
        parts["train"] += idx[n_test + n_val:].tolist()
    return {k: np.sort(np.array(v, dtype=int)) for k, v in parts.items()}


def parse_subjects(subjects) -> list[int]:
    """Subject numbers from a count (``6`` or ``"6"``: 1..6), a range (``"7-10"``), a list (``"1,3,5"``,
    ``[1, 3, 5]``) or a mix (``"1-3,8"``), in the order given."""
    if isinstance(subjects, (int, np.integer)) or (isinstance(subjects, str) and subjects.strip().isdigit()):
        n = int(subjects)
        if n < 1:
            raise ValueError(f"Invalid value for the 'subjects' parameter: a count must be at least 1, got {n}.")
        return list(range(1, n + 1))
    if isinstance(subjects, str):
        out = []
        for part in subjects.split(","):
            lo, sep, hi = part.strip().partition("-")
            if not (lo.strip().isdigit() and (not sep or hi.strip().isdigit())):
                raise ValueError(f"Invalid value for the 'subjects' parameter: expected a count ('6' for 1..6), a "
                                 f"range ('7-10') or a list ('1,3,5'), but got {subjects!r} instead.")
            lo_n, hi_n = int(lo), int(hi) if sep else int(lo)
            if hi_n < lo_n:
                raise ValueError(f"Invalid value for the 'subjects' parameter: the range {part.strip()!r} is empty.")
            out += range(lo_n, hi_n + 1)
    else:
        out = [int(v) for v in subjects]
    if not out or min(out) < 1:
        raise ValueError(f"Invalid value for the 'subjects' parameter: subject numbers start at 1, got {subjects!r}.")
    if len(set(out)) != len(out):
        raise ValueError(f"Invalid value for the 'subjects' parameter: {subjects!r} names a subject twice.")
    return out


def simulate_dataset(stimuli_dir, out, preset: str = "demo", subjects: int | str | list[int] = 6, seed: int = 0,
                     block_drift: bool = False, splits_out=None, per_class: int | None = None,
                     n_subjects: int | None = None) -> dict:
    """Simulate every image once per subject and write the EEG-ImageNet ``.pth`` and splits files.

    ``subjects`` is a count (``6``: subjects 1..6) or the subject numbers (``"7-10"``, ``"1,3,5"``, a list;
    see :func:`parse_subjects`); the file's ``subject`` field holds the real numbers, so subjects 7-10 are
    new people of the population that subjects 1-6 came from (:class:`EEGSimulator`). ``n_subjects`` is
    the older name of a count. Trials are recorded per subject in class blocks (as EEG-ImageNet: each
    class's images in one block), so ``block_drift`` marks each class by its block. ``per_class`` keeps
    only the first images of each class (small data sets for tests). Returns a summary.

    Trial noise (and trial lengths) come from one stream for the whole file, subject after subject in
    the order given: the same subjects in the same order give the same file.
    """
    import torch

    records = load_stimulus_metadata(stimuli_dir)
    if per_class is not None:
        keep = [i for i, r in enumerate(records) if int(r.image.split("_")[-1]) <= per_class]
        records = [records[i] for i in keep]
    images = load_stimulus_images(stimuli_dir, records)
    classes = np.array([r.class_index for r in records])
    numbers = parse_subjects(subjects if n_subjects is None else n_subjects)
    sim = EEGSimulator(preset, n_subjects=0, seed=seed, block_drift=block_drift)
    rng = np.random.default_rng([seed, 2718])
    lengths = np.where(rng.random((len(numbers), len(records))) < 0.8, N_SAMPLES,
                       rng.integers(480, 521, (len(numbers), len(records))))
    dataset = []
    for row, s in enumerate(numbers):
        for c in range(len(CLASSES)):  # one block per class, in class order
            idx = np.flatnonzero(classes == c)
            if len(idx) == 0:
                continue
            n_max = int(lengths[row, idx].max())
            eeg = sim.simulate(images[idx], classes[idx], [s] * len(idx), rng, blocks=[c] * len(idx),
                               n_samples=n_max)
            for j, i in enumerate(idx):
                dataset.append({"eeg": torch.from_numpy(eeg[j, :, :lengths[row, i]].copy()), "image": int(i),
                                "label": int(classes[i]), "subject": s})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dataset": dataset, "labels": list(SYNSETS), "images": [r.image for r in records]}, out)
    img_split = make_image_splits(classes, seed)
    part_of = np.empty(len(records), dtype=object)
    for k, v in img_split.items():
        part_of[v] = k
    splits = {k: [n for n, d in enumerate(dataset) if part_of[d["image"]] == k] for k in ("train", "val", "test")}
    splits_out = Path(splits_out) if splits_out else out.with_name(out.stem + "_splits.pth")
    torch.save({"splits": [splits]}, splits_out)
    return {"trials": len(dataset), "out": str(out), "splits": str(splits_out),
            "sizes": {k: len(v) for k, v in splits.items()}}


# ----------------------------------------------------------------------------------------------
def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stimuli", required=True, help="stimulus folder made by 'python -m neuroimagen.data stimuli'")
    p.add_argument("--out", required=True, help="output .pth in the EEG-ImageNet format")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="noise preset (default: demo)")
    p.add_argument("--subjects", default="6",
                   help="a count ('6': subjects 1-6, the founding subjects) or subject numbers ('7-10', '1,3,5'): "
                        "subjects 7 on are new people of the same population (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--block-drift", action="store_true", help="add slow per-block drifts (default: off)")
    p.add_argument("--splits", default=None, help="splits file (default: OUT with '_splits.pth')")
    p.add_argument("--per-class", type=int, default=None, help="only the first N images of each class (default: all)")


def run_simulate_cli(args: argparse.Namespace) -> None:
    summary = simulate_dataset(args.stimuli, args.out, preset=args.preset, subjects=args.subjects, seed=args.seed,
                               block_drift=args.block_drift, splits_out=args.splits, per_class=args.per_class)
    print(summary)


def plot_simulation_summary(preset: str = "demo", stimuli_dir="data/stimuli", n_trials: int = 200, seed: int = 0):
    """Figure: grand-average ERP butterfly, topomaps at P1/N1/P300 latencies and the spectrum (raw volts)."""
    import mne
    from matplotlib.figure import Figure

    records = load_stimulus_metadata(stimuli_dir)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), n_trials, replace=False)
    sim = EEGSimulator(preset, seed=seed)
    imgs = load_stimulus_images(stimuli_dir, [records[i] for i in pick])
    x = sim.simulate(imgs, [records[i].class_index for i in pick], rng.integers(1, 7, n_trials), rng, raw=True)
    erp = x.mean(axis=0) * 1e6
    t = np.arange(x.shape[-1]) / SFREQ * 1000
    fig = Figure(figsize=(12, 7), layout="constrained")
    gs = fig.add_gridspec(2, 4)
    ax = fig.add_subplot(gs[0, :3])
    ax.plot(t, erp.T, lw=0.5, color="k", alpha=0.4)
    ax.set(xlabel="time after onset (ms)", ylabel="µV", title=f"Grand-average ERP ({n_trials} trials, {preset})")
    axs = fig.add_subplot(gs[0, 3])
    psd, freqs = mne.time_frequency.psd_array_welch(x.reshape(-1, x.shape[-1]), SFREQ, fmin=1, fmax=100,
                                                    n_fft=500, verbose=False)
    axs.semilogy(freqs, psd.mean(axis=0) * 1e12)
    axs.set(xlabel="Hz", ylabel="µV²/Hz", title="Spectrum (single trials)")
    for k, lat in enumerate((100, 170, 350)):
        a = fig.add_subplot(gs[1, k])
        mne.viz.plot_topomap(erp[:, lat], sim.info, axes=a, show=False)
        a.set_title(f"{lat} ms")
    a = fig.add_subplot(gs[1, 3])
    a.plot(t, x[0].T * 1e6, lw=0.3)
    a.set(title="One raw trial", xlabel="ms", ylabel="µV")
    return fig
