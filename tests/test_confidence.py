"""The output's confidence and in-distribution check (``DecodingCheck``): noise is flagged, the shipped example
trials are accepted, the confidence is a probability, the component saves as safetensors, and a checkpoint
without one says so.

Runs on ``$NEUROIMAGEN_TEST_CHECKPOINT`` when set, else on the embedded checkpoint; its ``decoding_check``, or
the one ``scripts/fit_confidence.py`` fitted for its EEG encoder (``reports/confidence/demo/``)::

    python scripts/shuffle_checkpoint.py --out /tmp/shuffled
    NEUROIMAGEN_TEST_CHECKPOINT=/tmp/shuffled python -m pytest -q tests/test_confidence.py   # fails
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroimagen import NeuroImagenPipeline
from neuroimagen.data import EEGTrial, preprocess, read_trial
from neuroimagen.data.montage import model_ch_names
from neuroimagen.models import DecodingCheck
from neuroimagen.models.decoding_check import expected_calibration_error, fit_temperature

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = Path(os.environ.get("NEUROIMAGEN_TEST_CHECKPOINT", ROOT / "checkpoints" / "neuroimagen-tiny"))
REPORT = ROOT / "reports" / "confidence" / "demo"
EXAMPLES = sorted((ROOT / "examples").glob("*.npz"))
FAST = {"num_inference_steps": 2, "strength": 0.5, "output_type": "np"}  # one img2img step: the check is before it


def _sha256(folder: Path) -> str:
    return hashlib.sha256(next(folder.glob("*.safetensors")).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipe():
    if not (CHECKPOINT / "model_index.json").is_file():
        pytest.skip(f"no checkpoint at {CHECKPOINT}")
    pipe = NeuroImagenPipeline.from_pretrained(CHECKPOINT)
    report = json.loads((REPORT / "metrics.json").read_text())
    own = pipe.decoding_check is not None
    if not own or "NEUROIMAGEN_TEST_CHECKPOINT" not in os.environ:
        # The shipped component (or, before it is installed, the report's) was fitted for this very encoder,
        # and the shipped one is the one the report measures.
        assert _sha256(CHECKPOINT / "eeg_encoder") == report["encoder_sha256"], (
            f"The decoding check of {REPORT} was fitted for another EEG encoder than {CHECKPOINT}'s: rerun "
            f"scripts/fit_confidence.py (the command is in its README) after changing the EEG stages.")
        assert not own or _sha256(CHECKPOINT / "decoding_check") == report["component_sha256"], (
            f"The shipped decoding_check is not the one {REPORT} measures: rerun scripts/fit_confidence.py.")
    if not own:  # not installed in the checkpoint yet: the one the report measured
        pipe.register_modules(decoding_check=DecodingCheck.from_pretrained(REPORT / "decoding_check"))
    return pipe


def _volts(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(128, 500) of noise at EEG amplitude (10 uV RMS), as a recording on the model's cap would bring it."""
    x = rng.standard_normal((128, 500))
    if kind == "pink":  # 1/f power spectrum
        spec = np.fft.rfft(x, axis=-1)
        f = np.fft.rfftfreq(500, 1e-3)
        f[0] = f[1]
        x = np.fft.irfft(spec / np.sqrt(f), n=500, axis=-1)
    return 10e-6 * x / x.std()


def _upload(volts: np.ndarray) -> np.ndarray:
    return preprocess(EEGTrial(volts, 1000.0, list(model_ch_names()))).data


@pytest.fixture(scope="module")
def examples() -> np.ndarray:
    assert len(EXAMPLES) >= 10
    return np.stack([preprocess(read_trial(p)).data for p in EXAMPLES])


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.array([read_trial(p).label for p in EXAMPLES])


def test_noise_is_flagged_and_example_trials_are_accepted(pipe, examples):
    rng = np.random.default_rng(0)
    noise = np.stack([_upload(_volts(kind, rng)) for kind in ("white", "pink") for _ in range(3)])
    out = pipe(np.concatenate([noise, examples]), generator=torch.Generator().manual_seed(0), **FAST)
    assert out.in_distribution.dtype == bool and out.in_distribution.shape == (len(noise) + len(examples),)
    assert not out.in_distribution[:len(noise)].any(), out.ood_score[:len(noise)]  # every noise trial flagged
    assert (out.ood_score[:len(noise)] > out.ood_threshold).all()
    # held-out trials of trained subjects: 95 % of such trials are accepted (reports/confidence/demo)
    assert out.in_distribution[len(noise):].sum() >= len(examples) - 1, out.ood_score[len(noise):]
    assert any("out of distribution" in n and "not a reconstruction" in n for n in out.notes)


def test_the_shipped_examples_on_other_caps_are_accepted(pipe):
    """The app's examples in other layouts (new people, 19 to 64 channels, interpolated): no foreign-EEG banner
    on the occurrence the app reads first."""
    folder = ROOT / "examples" / "formats"
    entries = [e for e in json.loads((folder / "index.json").read_text())["formats"] if e.get("cap") != "actiCAP 128"]
    assert len(entries) >= 3
    trials = []
    for e in entries:
        events = [k for k in e.get("events", {}) if "timulus" in k]  # BrainVision "Stimulus/S  1", FIF "stimulus"
        event = events[0] if events and not e["file"].endswith("-epo.fif") else None
        trials.append(preprocess(read_trial(folder / e["file"], [folder / c for c in e["companions"]] or None,
                                            event=event)).data)
    out = pipe(np.stack(trials), generator=torch.Generator().manual_seed(0), **FAST)
    assert out.in_distribution.all(), dict(zip([e["file"] for e in entries], out.ood_score))


def test_scrambled_channels_are_flagged(pipe, examples):
    rng = np.random.default_rng(1)
    shuffled = np.stack([x[rng.permutation(len(x))] for x in examples])
    out = pipe(shuffled, generator=torch.Generator().manual_seed(0), **FAST)
    assert (~out.in_distribution).sum() >= len(examples) - 1, out.ood_score


def test_confidence_is_a_probability_as_high_as_the_decoding_is_right(pipe, examples, labels):
    out = pipe(examples, generator=torch.Generator().manual_seed(0), **FAST)
    assert out.confidence.shape == (len(examples),) and ((out.confidence >= 0) & (out.confidence <= 1)).all()
    accuracy = (out.class_probs.argmax(1) == labels).mean()
    assert abs(out.confidence.mean() - accuracy) < 0.1, (out.confidence, accuracy)


def test_component_saves_as_safetensors_and_loads_the_same(pipe, examples, tmp_path):
    check = pipe.decoding_check
    check.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    loaded = DecodingCheck.from_pretrained(tmp_path)
    assert loaded.config.threshold == check.config.threshold and loaded.config.scores == check.config.scores
    x = torch.from_numpy(examples[:3])
    with torch.no_grad():
        f, probs = pipe.eeg_encoder(x), torch.full((3, 40), 1 / 40)
        a, b = check(f, x, probs), loaded(f, x, probs)
    torch.testing.assert_close(a["ood_score"], b["ood_score"])


def test_without_the_component_the_fields_are_none_and_a_note_says_so(pipe, examples):
    bare = NeuroImagenPipeline(**{**pipe.components, "decoding_check": None})
    out = bare(examples[:1], generator=torch.Generator().manual_seed(0), **FAST)
    assert out.confidence is None and out.in_distribution is None and out.ood_score is None
    assert any("No decoding check" in n for n in out.notes)


def test_temperature_fit_recovers_the_temperature_and_lowers_the_calibration_error():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4000, 40, generator=gen)
    labels = torch.multinomial(torch.softmax(logits / 2.0, -1), 1, generator=gen).squeeze(1)  # true T = 2
    overconfident = torch.softmax(logits, -1)
    t = fit_temperature(overconfident, labels)
    assert 1.8 < t < 2.2
    correct = (overconfident.argmax(1) == labels).numpy()
    calibrated = torch.softmax(overconfident.log() / t, -1)
    assert expected_calibration_error(calibrated.max(1).values.numpy(), correct) < 0.03 < \
        expected_calibration_error(overconfident.max(1).values.numpy(), correct)
