"""The semantic decoder against any text encoder: MiniLM by default, or Stable Diffusion's own CLIP (the paper's).

Tiny random CLIP text models in Stable Diffusion's folder layout, saved to a temporary folder and loaded by path:
training regresses their states, the caption bank is built in their space, and in full mode a matching Stable
Diffusion is conditioned on the decoded states themselves while any other gets the caption's text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_pipeline import make_tiny_pipeline, make_tiny_sd

from neuroimagen import NeuroImagenPipeline
from neuroimagen.data.captions import CaptionEncoder
from neuroimagen.data.classes import CLASSES, label_caption

LABELS = [label_caption(c.index) for c in CLASSES]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny SD (16 x 32 CLIP states) and another of the same architecture with other weights."""
    root = tmp_path_factory.mktemp("sd")
    return make_tiny_sd(root / "a", seed=0), make_tiny_sd(root / "b", seed=1)


def test_caption_states_are_stable_diffusions_own_prompt_states(sd, tmp_path):
    """A Stable Diffusion folder's CLIP encodes captions exactly as SD encodes a prompt; a plain CLIP text model
    folder (model and tokenizer together) works too."""
    from diffusers import StableDiffusionPipeline

    enc = CaptionEncoder(str(sd[0]))
    assert (enc.model_type, enc.max_length, enc.hidden_dim) == ("clip_text_model", 16, 32)
    states = enc([LABELS[8], ""])
    assert states.shape == (2, 16, 32)
    pipe = StableDiffusionPipeline.from_pretrained(sd[0], safety_checker=None, requires_safety_checker=False)
    expected = pipe.encode_prompt([LABELS[8], ""], "cpu", 1, do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(states, expected)
    pipe.text_encoder.save_pretrained(tmp_path / "clip")
    pipe.tokenizer.save_pretrained(tmp_path / "clip")
    torch.testing.assert_close(CaptionEncoder(str(tmp_path / "clip"))([LABELS[8], ""]), expected)
    with pytest.raises(ValueError, match="CLIP text encoder's states are 16 tokens long"):
        CaptionEncoder(str(sd[0]), max_length=77)


def test_a_missing_text_encoder_says_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match=r"expected 'minilm', or the folder or hub id of a Stable Diffusion model.*"
                                         r"but got '.*nothing-here'"):
        CaptionEncoder(str(tmp_path / "nothing-here"))


@pytest.fixture(scope="module")
def trained(sd, tmp_path_factory, stimuli_dir, sim_files):
    """The semantic stage of configs/debug.json (one epoch) with ``text_encoder`` the tiny SD's folder."""
    from neuroimagen.train import main

    out = tmp_path_factory.mktemp("run")
    config = json.loads((Path(__file__).resolve().parents[1] / "configs" / "debug.json").read_text())
    config["semantic"].update(epochs=1, text_encoder=str(sd[0]))
    (out / "config.json").write_text(json.dumps(config))
    data, splits = sim_files
    assert main(["semantic", "--config", str(out / "config.json"), "--data", str(data), "--splits", str(splits),
                 "--stimuli", str(stimuli_dir), "--out", str(out)]) == 0
    return out


def test_the_semantic_stage_regresses_the_clip_states_and_builds_the_bank_in_their_space(sd, trained):
    from neuroimagen.models import CaptionBank, SemanticDecoder

    dec = SemanticDecoder.from_pretrained(trained / "semantic" / "decoder")
    bank = CaptionBank.from_pretrained(trained / "semantic" / "caption_bank")
    assert (dec.config.seq_len, dec.config.hidden_dim) == (16, 32)  # the encoder's length and width, not MiniLM's
    assert (bank.config.text_encoder_type, bank.config.text_encoder) == ("clip_text_model", str(sd[0]))
    enc = CaptionEncoder(str(sd[0]))
    torch.testing.assert_close(bank.label_bank, enc(LABELS))
    torch.testing.assert_close(bank.empty_state, enc([""]))
    m = json.loads((trained / "semantic" / "metrics.json").read_text())
    assert m["config"]["text_encoder"] == str(sd[0]) and 0 <= m["test_top1"] <= 1


def _full_pipeline(trained, sd_path, tmp_path) -> NeuroImagenPipeline:
    """A NeuroImagen folder with the trained decoder and bank, loaded with ``sd_model=sd_path`` as a user would."""
    from neuroimagen.models import CaptionBank, SemanticDecoder

    pipe = make_tiny_pipeline(seq_len=16, hidden_dim=32)
    pipe.register_modules(semantic_decoder=SemanticDecoder.from_pretrained(trained / "semantic" / "decoder").eval(),
                          caption_bank=CaptionBank.from_pretrained(trained / "semantic" / "caption_bank"))
    pipe.save_pretrained(tmp_path / "neuroimagen")
    full = NeuroImagenPipeline.from_pretrained(tmp_path / "neuroimagen", sd_model=str(sd_path))
    full.set_progress_bar_config(disable=True)
    return full


def _run(pipe, eeg, caption_source):
    """The call's output and the ``encoder_hidden_states`` the UNet was given at its first step."""
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)
    try:
        out = pipe(eeg, caption_source=caption_source, generator=torch.Generator().manual_seed(0), strength=1.0,
                   num_inference_steps=2, guidance_scale=5.0, output_type="np")
    finally:
        hook.remove()
    negative, positive = seen[0].chunk(2)  # classifier-free guidance: unconditional half first
    return out, negative, positive


@pytest.fixture(scope="module")
def eeg():
    return torch.randn(2, 128, 440, generator=torch.Generator().manual_seed(3))


def test_a_matching_stable_diffusion_is_conditioned_on_the_decoded_states(sd, trained, eeg, tmp_path):
    """The paper's L + I: ``predicted`` gives SD the regressed states, ``label`` the decoded class's exact label
    states, and the unconditional half is the empty caption's: no text goes through SD's encoder."""
    full = _full_pipeline(trained, sd[0], tmp_path)
    assert full.text_encoder_mismatch() is None and not full.uses_text_encoder
    bank = full.caption_bank
    with torch.no_grad():
        regressed = full.semantic_decoder(eeg)[:, 0]
    out, negative, positive = _run(full, eeg, "predicted")
    torch.testing.assert_close(positive, regressed)
    torch.testing.assert_close(negative, bank.empty_states(2))
    torch.testing.assert_close(out.prompt_embeds, regressed)
    assert out.images.shape == (2, 16, 16, 3) and np.isfinite(out.images).all()
    assert any("own text encoder: the decoded states condition it directly" in n for n in out.notes)

    out, negative, positive = _run(full, eeg, "label")
    top = torch.from_numpy(out.class_probs.argmax(1))
    torch.testing.assert_close(positive, bank.label_states(top))
    torch.testing.assert_close(positive, CaptionEncoder(str(sd[0]))([LABELS[k] for k in top]))
    assert [c[0][0] for c in out.captions] == out.caption_used == [LABELS[k] for k in top]
    assert any("exact label-caption states condition it directly" in n for n in out.notes)

    full.text_encoder.to(torch.float16)  # SD loaded in half precision still matches its float32 self
    assert full.text_encoder_mismatch() is None


def test_a_stable_diffusion_with_another_text_encoder_gets_the_caption_text_and_a_note(sd, trained, eeg, tmp_path):
    """Same architecture and shapes, other weights: the fingerprint (the bank's stored states) tells them apart."""
    other = _full_pipeline(trained, sd[1], tmp_path)
    reason = other.text_encoder_mismatch()
    assert reason is not None and "other weights" in reason and other.uses_text_encoder
    out, negative, positive = _run(other, eeg, "predicted")
    torch.testing.assert_close(positive, other._encode_text(out.caption_used))
    torch.testing.assert_close(negative, other._encode_text(["", ""]))
    assert any("own text encoder" in n and "other weights" in n for n in out.notes)
    with torch.no_grad():
        assert not torch.allclose(positive, other.semantic_decoder(eeg)[:, 0])


def test_a_text_encoder_of_another_shape_is_a_mismatch_that_says_the_shapes(trained, tmp_path):
    wide = make_tiny_sd(tmp_path / "wide", width=48)
    reason = _full_pipeline(trained, wide, tmp_path).text_encoder_mismatch()
    assert reason.startswith("the caption bank holds clip_text_model states of 16 x 32")
    assert reason.endswith("this diffusion model's text encoder gives clip_text_model states of 16 x 48")


def test_caption_states_are_cached_per_text_encoder(sd, trained, stimuli_dir):
    """The run folder keeps one cache per encoder: MiniLM's states are not reused for CLIP, nor the other way."""
    from neuroimagen.training.common import caption_states

    clip = caption_states(stimuli_dir, trained, str(sd[0]))  # written by the semantic stage: read back
    minilm = caption_states(stimuli_dir, trained)
    assert clip["label"].shape == (40, 16, 32) and clip["text_encoder_type"] == "clip_text_model"
    assert minilm["label"].shape == (40, 32, 384) and minilm["text_encoder_type"] == "bert"
    torch.testing.assert_close(clip["label"], CaptionEncoder(str(sd[0]))(LABELS))
    assert (trained / "caption_states.safetensors").is_file()  # MiniLM's file keeps its name
    assert len(list(trained.glob("caption_states-*.safetensors"))) == 1
