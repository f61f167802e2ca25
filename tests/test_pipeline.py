"""NeuroImagenPipeline: contract, determinism, ablations, batches, bad arguments, full (SD) mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_pipeline import make_tiny_pipeline, make_tiny_sd

from demo.model_card import model_summary
from neuroimagen import NeuroImagenPipeline


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def laid_out():
    return make_tiny_pipeline(seed=0, layout_prior=True)


@pytest.fixture(scope="module")
def eeg():
    return np.random.default_rng(0).standard_normal((3, 128, 440)).astype(np.float32)


def run(pipe, x, seed=0, **kw):
    kw.setdefault("num_inference_steps", 4)
    return pipe(x, generator=torch.Generator().manual_seed(seed), output_type="np", **kw)


def test_output_contract(pipe, eeg):
    out = pipe(eeg[0], generator=torch.Generator().manual_seed(0), num_inference_steps=3)
    assert len(out.images) == 1 and out.images[0].size == (32, 32)
    assert len(out.saliency_maps) == 1 and out.saliency_maps[0].mode == "RGB"
    assert len(out.captions[0]) == 5 and out.captions[0][0][0].startswith("an image of")
    assert np.isclose(out.class_probs.sum(), 1.0, atol=1e-5) and out.class_probs.shape == (1, 40)
    assert out.prompt_embeds.shape == (1, 8, 384)
    assert out.caption_used[0] == out.captions[0][0][0]  # the image is conditioned on the caption shown first
    # by default on that caption's exact states (caption_source="label"), not on the regressed ones
    top = int(out.class_probs[0].argmax())
    torch.testing.assert_close(out.prompt_embeds[0], pipe.caption_bank.label_bank[top])


def test_same_seed_same_image_other_seed_other_image(pipe, eeg):
    a, b, c = run(pipe, eeg[0], 1), run(pipe, eeg[0], 1), run(pipe, eeg[0], 2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.saliency_maps, b.saliency_maps)
    assert np.abs(a.images - c.images).max() > 1e-3


def test_round_trip_save_load(pipe, eeg, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["eeg_encoder"] == ["neuroimagen.models.eeg_encoder", "EEGEncoder"]
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = NeuroImagenPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    a, b = run(pipe, eeg[0]), run(loaded, eeg[0])
    np.testing.assert_allclose(a.saliency_maps, b.saliency_maps, atol=1e-5)
    np.testing.assert_allclose(a.class_probs, b.class_probs, atol=1e-6)
    np.testing.assert_allclose(a.images, b.images, atol=2e-3)  # attention kernels may differ in the last bits


@pytest.mark.parametrize("mode", ["both", "saliency_only", "caption_only"])
@pytest.mark.parametrize("caption_source", ["predicted", "label", "detailed"])
def test_every_ablation_and_caption_source_runs(pipe, eeg, mode, caption_source):
    out = run(pipe, eeg[0], mode=mode, caption_source=caption_source, num_inference_steps=2)
    assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()
    if mode == "saliency_only":
        torch.testing.assert_close(out.prompt_embeds, pipe.caption_bank.empty_states(1))
    if caption_source == "label" and mode != "saliency_only":
        top = int(out.class_probs[0].argmax())
        torch.testing.assert_close(out.prompt_embeds[0], pipe.caption_bank.label_bank[top])


def test_modes_differ(pipe, eeg):
    both, cap = run(pipe, eeg[0], mode="both"), run(pipe, eeg[0], mode="caption_only")
    assert np.abs(both.images - cap.images).max() > 1e-3


@pytest.mark.parametrize("which", ["pipe", "laid_out"])  # laid_out: with a layout prior (its boxes are per trial)
def test_batch_equals_singles(which, eeg, request):
    pipe = request.getfixturevalue(which)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    batch = pipe(eeg, generator=gens, num_inference_steps=3, output_type="np")
    singles = [run(pipe, eeg[i], seed=i, num_inference_steps=3) for i in range(3)]
    np.testing.assert_allclose(batch.images, np.concatenate([s.images for s in singles]), atol=1e-4)
    np.testing.assert_allclose(batch.saliency_maps, np.concatenate([s.saliency_maps for s in singles]), atol=1e-5)
    np.testing.assert_allclose(batch.class_probs, np.concatenate([s.class_probs for s in singles]), atol=1e-5)


def test_accepts_preprocessed_trial_and_refuses_raw_one(pipe):
    from neuroimagen.data import EEGTrial, preprocess
    from neuroimagen.data.montage import model_ch_names

    raw = EEGTrial(np.random.default_rng(1).standard_normal((128, 500)) * 1e-5, 1000.0, list(model_ch_names()))
    assert run(pipe, preprocess(raw)).images.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="not preprocessed"):
        run(pipe, raw)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strength": 0.0}, "'strength'.*\\(0, 1\\]"),
    ({"strength": 1.5}, "'strength'.*\\(0, 1\\]"),
    ({"num_inference_steps": 0}, "'num_inference_steps'"),
    ({"num_inference_steps": 2, "strength": 0.3}, "at least one denoising step"),
    ({"caption_source": "blip"}, "Allowed values are 'predicted', 'label' and 'detailed'"),
    ({"mode": "image_only"}, "'mode'"),
    ({"output_type": "png"}, "Allowed values are 'pil', 'np' and 'pt', but got 'png'"),
])
def test_bad_arguments(pipe, eeg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(eeg[0], **kwargs)


def test_too_few_steps_for_the_strength_are_refused_with_the_minimum(pipe, eeg):
    """1 step at strength 0.75 gives img2img int(0.75) = 0 denoising steps: refused before running, naming the
    fewest steps that work; that many (and no fewer) runs, at every strength the app's slider offers."""
    from neuroimagen.pipelines.pipeline_neuroimagen import min_inference_steps

    with pytest.raises(ValueError, match=r"at strength=0.75 num_inference_steps must be at least 2, but got 1"):
        pipe(eeg[0], num_inference_steps=1, strength=0.75)
    for strength in (0.05, 0.15000000000000002, 0.3, 0.75, 1.0):  # slider values, float error included
        n = min_inference_steps(strength)
        assert int(n * strength) == 1
        if n > 1:
            with pytest.raises(ValueError, match=f"at least {n}, but got {n - 1}"):
                pipe(eeg[0], num_inference_steps=n - 1, strength=strength)
    assert run(pipe, eeg[0], num_inference_steps=2, strength=0.75).images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("shape", [(64, 440), (128, 500), (2, 3, 128, 440), (440,)])
def test_wrong_eeg_shape(pipe, shape):
    with pytest.raises(ValueError, match="Invalid EEG shape: expected .*128, 440"):
        pipe(np.zeros(shape, np.float32))


def test_nan_eeg(pipe, eeg):
    x = eeg[0].copy()
    x[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pipe(x)


# ---- layout prior: the decoded class's template drawn into the saliency map at the decoded box ----

def test_layout_prior_draws_the_decoded_class_template_at_the_box(pipe, laid_out, eeg):
    """The tiny prior's box is the image's middle (side 0.7) and its templates are flat colours: with the default
    weight (1) the map's middle is the decoded class's colour, its corners the generator's map, and the image
    changes; weight 0 is the pipeline without a prior, pixel for pixel."""
    plain, drawn = run(pipe, eeg[0]), run(laid_out, eeg[0])
    off = run(laid_out, eeg[0], layout_weight=0)
    np.testing.assert_array_equal(off.images, plain.images)
    np.testing.assert_array_equal(off.saliency_maps, plain.saliency_maps)
    top = int(drawn.class_probs[0].argmax())
    colour = (laid_out.layout_prior.templates[top, :, 0, 0].numpy() + 1) / 2
    np.testing.assert_allclose(drawn.start_images[0, 16, 16], colour, atol=1e-5)
    np.testing.assert_allclose(drawn.start_images[0, 12:20, 12:20], np.broadcast_to(colour, (8, 8, 3)), atol=1e-5)
    np.testing.assert_array_equal(drawn.start_images[0, :3, :3], plain.saliency_maps[0, :3, :3])
    assert np.abs(drawn.images - plain.images).max() > 1e-2
    assert any("Layout prior (weight 1)" in n for n in drawn.notes)
    assert not any("Layout prior" in n for n in off.notes)
    half = run(laid_out, eeg[0], layout_weight=0.5)  # half opacity: halfway between the map and the colour
    np.testing.assert_allclose(half.start_images[0, 16, 16], (colour + plain.saliency_maps[0, 16, 16]) / 2, atol=1e-5)


def test_the_start_image_is_the_generators_map_with_the_template_drawn_in(pipe, laid_out, eeg):
    """``saliency_maps`` is the generator's own map, with or without a layout prior; ``start_images`` (what img2img
    starts from) differs from it inside the decoded box only, and equals it without a prior or at weight 0."""
    plain, drawn = run(pipe, eeg[:2]), run(laid_out, eeg[:2])
    np.testing.assert_array_equal(plain.start_images, plain.saliency_maps)
    np.testing.assert_array_equal(run(laid_out, eeg[:2], layout_weight=0).start_images, drawn.saliency_maps)
    np.testing.assert_array_equal(drawn.saliency_maps, plain.saliency_maps)  # the prior leaves the map alone
    assert drawn.start_images.shape == drawn.saliency_maps.shape
    inside = (slice(None), slice(12, 20), slice(12, 20))  # within the tiny prior's box (the middle, side 0.7)
    outside = [(slice(None), slice(0, 3), slice(None)), (slice(None), slice(-3, None), slice(None)),
               (slice(None), slice(None), slice(0, 3)), (slice(None), slice(None), slice(-3, None))]
    assert (np.abs(drawn.start_images[inside] - drawn.saliency_maps[inside]).max(axis=-1) > 1e-3).all()
    for edge in outside:
        np.testing.assert_array_equal(drawn.start_images[edge], drawn.saliency_maps[edge])


def test_layout_prior_leaves_caption_only_mode_alone(pipe, laid_out, eeg):
    a, b = run(pipe, eeg[0], mode="caption_only"), run(laid_out, eeg[0], mode="caption_only")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.saliency_maps, b.saliency_maps)
    np.testing.assert_array_equal(b.start_images, b.saliency_maps)  # nothing drawn: no start image is used
    assert not any("Layout prior" in n for n in b.notes)


def test_layout_prior_round_trip_save_load(laid_out, eeg, tmp_path):
    laid_out.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["layout_prior"] == ["neuroimagen.models.layout_prior", "LayoutPrior"]
    assert (tmp_path / "layout_prior" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = NeuroImagenPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(loaded.layout_prior.templates, laid_out.layout_prior.templates)
    a, b = run(laid_out, eeg[:2]), run(loaded, eeg[:2])
    np.testing.assert_allclose(a.saliency_maps, b.saliency_maps, atol=1e-5)
    np.testing.assert_allclose(a.images, b.images, atol=2e-3)


# ---- class decoder: the decoded class from a CNN trained for it, mixed with the caption readout ----

def _with_class_decoder(readout_weight: float, favourite: int, layout_prior: bool = False):
    """A tiny pipeline with a ClassDecoder whose CNN always names ``favourite`` (a large bias on that class)."""
    from neuroimagen.data.classes import SYNSETS
    from neuroimagen.models import ClassDecoder

    p = make_tiny_pipeline(seed=0, layout_prior=layout_prior)
    dec = ClassDecoder(ch_names=p.eeg_ch_names, labels=list(SYNSETS), readout_weight=readout_weight).eval()
    with torch.no_grad():
        dec.final_layer.weight.zero_()
        dec.final_layer.bias.zero_()
        dec.final_layer.bias[favourite] = 20.0
    p.register_modules(class_decoder=dec)
    return p


def test_the_class_decoder_decides_the_class_caption_and_template(pipe, eeg):
    """With a class decoder the class the user sees (first caption, class_probs, the condition's label states, the
    layout template) is the decoder's; with readout_weight 1 the output is the pipeline's without one."""
    plain = run(pipe, eeg[:2])
    favourite = (int(plain.class_probs[0].argmax()) + 7) % 40  # a class the readout does not name
    decided = run(_with_class_decoder(0.0, favourite), eeg[:2])
    assert list(decided.class_probs.argmax(1)) == [favourite, favourite]
    assert [c[0][0] for c in decided.captions] == [pipe.caption_bank.config.label_texts[favourite]] * 2
    assert decided.caption_used == [c[0][0] for c in decided.captions]
    torch.testing.assert_close(decided.prompt_embeds[0], pipe.caption_bank.label_bank[favourite])
    assert decided.captions[0][0][1] == pytest.approx(float(decided.class_probs[0].max()), abs=1e-4)
    np.testing.assert_array_equal(decided.saliency_maps, plain.saliency_maps)  # the encoder still draws the map
    assert np.abs(decided.images - plain.images).max() > 1e-3
    laid_pipe = _with_class_decoder(0.0, favourite, layout_prior=True)
    colour = (laid_pipe.layout_prior.templates[favourite, :, 0, 0].numpy() + 1) / 2  # the favourite's template
    np.testing.assert_allclose(run(laid_pipe, eeg[:1]).start_images[0, 16, 16], colour, atol=1e-5)
    readout_only = run(_with_class_decoder(1.0, favourite), eeg[:2])
    np.testing.assert_allclose(readout_only.class_probs, plain.class_probs, atol=1e-5)
    np.testing.assert_array_equal(readout_only.images, plain.images)
    assert readout_only.captions == plain.captions


def test_class_decoder_round_trip_and_mismatched_classes(eeg, tmp_path):
    from neuroimagen.models import ClassDecoder

    p = _with_class_decoder(0.5, 3)
    p.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["class_decoder"] == [
        "neuroimagen.models.class_decoder", "ClassDecoder"]
    loaded = NeuroImagenPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.class_decoder.config.readout_weight == 0.5
    np.testing.assert_allclose(run(loaded, eeg[:1]).class_probs, run(p, eeg[:1]).class_probs, atol=1e-6)
    p.register_modules(class_decoder=ClassDecoder(ch_names=p.eeg_ch_names, labels=["n1", "n2"]).eval())
    with pytest.raises(ValueError, match="class decoder names 2 classes but the caption bank has 40"):
        run(p, eeg[:1])
    with pytest.raises(ValueError, match="class labels"):
        ClassDecoder(labels=[])
    with pytest.raises(ValueError, match="'readout_weight'"):
        ClassDecoder(labels=["a"], readout_weight=1.5)


def test_bad_layout_weight(pipe, laid_out, eeg):
    with pytest.raises(ValueError, match="layout_weight=1.0 needs a layout_prior component, and this pipeline has none"):
        pipe(eeg[0], layout_weight=1.0)
    with pytest.raises(ValueError, match="'layout_weight'"):
        laid_out(eeg[0], layout_weight=-0.5)
    with pytest.raises(ValueError, match="'layout_weight'"):
        laid_out(eeg[0], layout_weight=float("nan"))


# ---- full mode: Stable-Diffusion-shaped components with a CLIP text encoder, loaded by path ----

def test_full_mode_with_tiny_sd_components(pipe, eeg, tmp_path):
    sd_path = make_tiny_sd(tmp_path)
    pipe.save_pretrained(tmp_path / "neuroimagen")
    full = NeuroImagenPipeline.from_pretrained(tmp_path / "neuroimagen", sd_model=str(sd_path))
    full.set_progress_bar_config(disable=True)
    assert full.uses_text_encoder and "diffusion: Stable Diffusion" in model_summary(full)
    out = full(eeg[0], generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np")
    assert out.images.shape == (1, 16, 16, 3) and np.isfinite(out.images).all()
    assert out.prompt_embeds.shape == (1, 16, 32)  # SD's own text encoder's states, not the MiniLM ones
    assert any("own text encoder" in n and "bert states of 8 x 384" in n for n in out.notes)
    # the condition is the decoded caption's text through SD's encoder
    expected = full._encode_text([out.caption_used[0]])
    torch.testing.assert_close(out.prompt_embeds, expected.cpu())


def test_bench_times_every_stage_including_the_layout_prior(laid_out, tmp_path):
    """``python -m neuroimagen.bench`` on a folder with a layout prior times it with the EEG stages, and its
    ``--out`` file says which weights it measured (for the model card) and how busy the machine was."""
    from neuroimagen import bench
    from neuroimagen.evaluation.provenance import weights_digest

    laid_out.save_pretrained(tmp_path / "pipe")
    argv = ["--checkpoint", str(tmp_path / "pipe"), "--repeats", "1", "--out", str(tmp_path / "b" / "bench.json")]
    assert bench.main(argv) == 0
    res = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert res["weights"] == weights_digest(tmp_path / "pipe") and "layout_prior" in res["weights"]
    assert res["command"] == "python -m neuroimagen.bench " + " ".join(argv)
    assert len(res["load_average_before"]) == 3 and res["cpu_ms"]["end_to_end"] > 0
    ms = res["latency_ms"]
    assert {"read", "preprocess", "encoder", "saliency", "semantic", "readout", "layout", "diffusion", "decode",
            "end_to_end"} <= set(ms)
    eeg = ("read", "preprocess", "encoder", "saliency", "semantic", "readout", "layout")
    assert ms["eeg_stages_total"] == pytest.approx(sum(ms[k] for k in eeg), abs=0.02)
    assert all(v > 0 for v in ms.values()) and res["load_s"] > 0 and res["peak_rss_mb"] > 0
    assert set(res["budgets_ok"]) == {"end_to_end<=1000ms", "eeg_stages<=50ms", "load<=5s"}


def test_a_replaced_scheduler_is_used(eeg):
    """The inner diffusers stage is kept between calls, and a component set afterwards still takes effect."""
    from diffusers import DPMSolverMultistepScheduler

    p = make_tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": 4, "strength": 1.0, "output_type": "np"}
    ddim = p(eeg[0], generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(ddim, p(eeg[0], generator=torch.Generator().manual_seed(0), **kw).images)
    p.scheduler = DPMSolverMultistepScheduler.from_config(p.scheduler.config)
    dpm = p(eeg[0], generator=torch.Generator().manual_seed(0), **kw).images
    assert not np.array_equal(ddim, dpm)
