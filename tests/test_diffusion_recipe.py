"""The UNet stage's recipe options (issue 22): v-prediction, min-SNR-gamma weighting, cross-attention placement,
fresh renders instead of the stimulus set, and snapshots for a quality-against-CPU curve."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroimagen.models.diffusion import build_scheduler, build_unet
from neuroimagen.training.denoising import diffusion_loss, noised

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.json"


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, noise = torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return z, noise, t


def test_the_v_target_is_the_one_the_sampler_assumes():
    """A UNet that predicted diffusers' own velocity exactly has zero loss, so the DDIM sampler that reads its output
    as v (the scheduler the stage saves) inverts what was learned; predicting the noise instead does not."""
    sched = build_scheduler(prediction_type="v_prediction")
    z, noise, t = _batch()
    v = sched.get_velocity(z, noise, t)
    assert diffusion_loss(v, z, noise, t, sched.alphas_cumprod, "v_prediction") < 1e-10
    assert diffusion_loss(noise, z, noise, t, sched.alphas_cumprod, "v_prediction") > 0.1
    assert diffusion_loss(noise, z, noise, t, sched.alphas_cumprod, "epsilon") == 0
    # And DDIM's own x0 from v and the noised latents gives back z.
    x_t = noised(sched.alphas_cumprod, t, z, noise)
    ab = sched.alphas_cumprod[t][:, None, None, None]
    torch.testing.assert_close(ab.sqrt() * x_t - (1 - ab).sqrt() * v, z, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type, denominator", [("epsilon", "snr"), ("v_prediction", "snr+1")])
def test_min_snr_gamma_weights_each_sample_as_published(prediction_type, denominator):
    """Hang et al. 2023: weight min(SNR, gamma) / SNR for the noise, / (SNR + 1) for v; a gamma above every SNR is
    plain MSE for the noise; the weights cut the loss of low-noise samples, not of high-noise ones."""
    ab = build_scheduler().alphas_cumprod
    z, noise, t = _batch()
    pred = noise + 0.3 * torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    target = noise if prediction_type == "epsilon" else ab[t].sqrt()[:, None, None, None] * noise - (
        1 - ab[t]).sqrt()[:, None, None, None] * z
    err = (pred - target).pow(2).mean((1, 2, 3))
    snr = ab[t] / (1 - ab[t])
    weight = snr.clamp(max=5.0) / (snr if denominator == "snr" else snr + 1)
    torch.testing.assert_close(diffusion_loss(pred, z, noise, t, ab, prediction_type, snr_gamma=5.0), (weight * err).mean())
    if prediction_type == "epsilon":
        big = float(snr.max()) + 1
        torch.testing.assert_close(diffusion_loss(pred, z, noise, t, ab, "epsilon", snr_gamma=big), err.mean())
        low_noise = t < 100
        assert weight[low_noise].max() < 0.5 and weight[t > 600].min() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'epsilon' or 'v_prediction'"):
        diffusion_loss(pred, z, noise, t, ab, "sample")


def test_cross_attention_sits_where_asked_and_costs_less_at_low_resolution():
    shipped = build_unet((16, 32, 32), attention_head_dim=4)
    assert shipped.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    low = build_unet((16, 32, 32), attention_head_dim=4, cross_attention=(False, True, True))
    assert low.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert low.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    x, c, t = torch.randn(2, 4, 16, 16), torch.randn(2, 32, 384), torch.tensor([10, 500])
    assert low(x, t, c).sample.shape == x.shape
    with pytest.raises(ValueError, match="one flag per block: 3 blocks"):
        build_unet((16, 32, 32), cross_attention=(True, False))


def test_fresh_renders_are_new_images_of_each_class_with_their_captions(stimuli_dir):
    from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata, render_stimuli

    images, classes, captions = render_stimuli(2, size=64, seed=1)
    assert images.shape == (80, 64, 64, 3) and images.dtype == np.uint8
    assert list(classes[:4]) == [0, 0, 1, 1] and len(captions) == 80
    again, _, _ = render_stimuli(2, size=64, seed=1)
    assert np.array_equal(images, again)  # deterministic for a seed
    records = load_stimulus_metadata(stimuli_dir)  # the set is drawn with seed 0
    stim = load_stimulus_images(stimuli_dir, records)
    first_two = np.concatenate([np.flatnonzero([r.class_index == c for r in records])[:2] for c in range(40)])
    assert not any(np.array_equal(a, b) for a, b in zip(images, stim[first_two]))  # none of them is in the set
    assert np.array_equal(render_stimuli(2, size=64, seed=0)[0], stim[first_two])  # seed 0 is the set's own draw
    assert all(records[first_two[0]].class_name in c for c in captions[:2])


def test_renders_on_any_background_keep_the_emoji_and_pose_and_change_only_the_background():
    from neuroimagen.data.stimuli import BACKGROUNDS, render_stimuli

    named, _, captions = render_stimuli(2, size=64, seed=3)
    anyc, classes, captions_any = render_stimuli(2, size=64, seed=3, any_background=True)
    assert anyc.shape == named.shape and list(classes[:3]) == [0, 0, 1]
    # the same draws (emoji, pose); the captions name no background
    assert [c + ", on " for c in captions_any] == [c[:c.index(", on ") + 5] for c in captions]
    corners = anyc[:, 0, 0].astype(int)  # the emoji keeps ~30 % of the frame free: corners show the background
    palette = np.array([rgb for _, rgb in BACKGROUNDS])
    off_palette = np.abs(corners[:, None] - palette[None]).sum(-1).min(1) > 30
    assert off_palette.mean() > 0.8  # colours no stimulus has
    same_bg = (named == named[:, :1, :1]).all(-1)  # background pixels of the named render
    changed = (named != anyc).any(-1)
    # what changed is the background (and the emoji's anti-aliased rim), not the emoji
    assert (changed & ~same_bg).mean() < 0.1 * changed.mean()


def test_a_v_prediction_run_on_fresh_renders_saves_its_scheduler_and_snapshots(tmp_path, stimuli_dir):
    """The recipe end to end at debug size: the scheduler assembled from the run predicts v, the snapshots load, and
    a captions file (which has no captions for fresh renders) is refused with what to do instead."""
    from diffusers import UNet2DConditionModel

    from neuroimagen.train import main
    from neuroimagen.training import unet
    from neuroimagen.training.config import load_config
    from neuroimagen.training.denoising import trained_scheduler

    assert main(["vae", "--config", str(CONFIG), "--stimuli", str(stimuli_dir), "--out", str(tmp_path)]) == 0
    paths, cfgs = load_config(CONFIG, overrides={"stimuli": str(stimuli_dir), "out": str(tmp_path)})
    cfg = replace(unet.Config(**cfgs["unet"]), fresh_per_class=1, prediction_type="v_prediction", snr_gamma=5.0,
                  cross_attention=[False, True, True], snapshot_every=2, max_steps=4, num_threads=1)
    result = unet.train(cfg, paths)
    assert result["steps"] == 4 and np.isfinite(result["final_loss"])
    assert trained_scheduler(tmp_path / "unet").config.prediction_type == "v_prediction"
    assert trained_scheduler(tmp_path / "vae").config.prediction_type == "epsilon"  # no run there: the default
    snaps = sorted(p.name for p in (tmp_path / "unet" / "snapshots").iterdir())
    assert snaps == ["step000002", "step000004"]
    snap = UNet2DConditionModel.from_pretrained(tmp_path / "unet" / "snapshots" / "step000004")
    assert snap.config.down_block_types[0] == "DownBlock2D"
    assert list(tmp_path.glob("fresh_captions_1_1_64.safetensors"))  # the captions' states, cached for a resume
    captions = tmp_path / "captions.json"
    captions.write_text("{}")
    with pytest.raises(ValueError, match="fresh_per_class 0"):
        unet.train(cfg, replace(paths, captions=captions))


def test_no_warm_up_is_a_constant_learning_rate_from_the_first_step():
    from neuroimagen.training import unet
    from neuroimagen.training.denoising import lr_factor

    cfg = replace(unet.Config(), warmup_steps=0, max_steps=100, decay_steps=0)
    assert [lr_factor(s, cfg) for s in (0, 1, 50)] == [1.0, 1.0, 1.0]
