"""The latent-diffusion components: the autoencoder, the caption-conditioned UNet and the DDIM scheduler.

diffusers' own classes, built in the shapes this project trains (``vae`` and ``unet`` stages) and loads
(the pipeline, the ``refine`` and ``assemble`` stages). Nothing here trains: the stages call these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, DDIMScheduler, UNet2DConditionModel


def build_vae(block_out_channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 1, latent_channels: int = 4,
              sample_size: int = 64) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL``: RGB at ``sample_size`` to latents downsampled once per block after
    the first (three blocks: 64 x 64 -> 16 x 16 x ``latent_channels``)."""
    n = len(block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
                         layers_per_block=layers_per_block, latent_channels=latent_channels,
                         norm_num_groups=min(32, block_out_channels[0]), sample_size=sample_size)


def load_autoencoder(folder: str | Path) -> AutoencoderKL | AsymmetricAutoencoderKL:
    """The autoencoder saved in ``folder``: the ``vae`` stage's ``AutoencoderKL`` or the ``decoder`` stage's
    ``AsymmetricAutoencoderKL`` (same encoder and latents, wider decoder), by the class its config.json names."""
    f = Path(folder) / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"No autoencoder in {folder}: expected a config.json written by the vae or decoder "
                                f"stage (python -m neuroimagen.train vae --config ...).")
    classes = {c.__name__: c for c in (AutoencoderKL, AsymmetricAutoencoderKL)}
    name = json.loads(f.read_text()).get("_class_name")
    if name not in classes:
        raise ValueError(f"{f} is for {name!r}; expected one of {sorted(classes)}.")
    return classes[name].from_pretrained(folder)


def build_unet(block_out_channels: Sequence[int] = (64, 128, 128), layers_per_block: int = 1,
               attention_head_dim: int = 8, sample_size: int = 16, latent_channels: int = 4,
               cross_attention_dim: int = 384, cross_attention: Sequence[bool] = (True, True, False)
               ) -> UNet2DConditionModel:
    """A randomly initialised ``UNet2DConditionModel``, one block per entry of ``block_out_channels`` (each after
    the first halves the resolution), cross-attending to caption states of ``cross_attention_dim`` in the blocks
    where ``cross_attention`` is true (down order; the up blocks mirror them; the middle block always attends).

    The default attends at the two high resolutions (16 x 16 and 8 x 8), as the shipped UNet; ``(False, True,
    True)`` attends only at 8 x 8 and 4 x 4, where the class is decided, and costs about a third less per step."""
    if len(cross_attention) != len(block_out_channels):
        raise ValueError(f"cross_attention needs one flag per block: {len(block_out_channels)} blocks "
                         f"({list(block_out_channels)}), but got {list(cross_attention)}.")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cross_attention))
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
        down_block_types=down, up_block_types=up,
        cross_attention_dim=cross_attention_dim, attention_head_dim=attention_head_dim,
        norm_num_groups=min(32, block_out_channels[0]))


def build_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear",
                    prediction_type: str = "epsilon") -> DDIMScheduler:
    """The DDIM scheduler the UNet is trained and sampled with (Stable Diffusion's betas); ``prediction_type`` is
    what the UNet predicts, ``"epsilon"`` (the noise) or ``"v_prediction"`` (Salimans & Ho's v)."""
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule=beta_schedule, clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, prediction_type=prediction_type)
