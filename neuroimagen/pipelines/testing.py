"""Tiny seeded pipelines for tests and demos of the plumbing (random weights: the images mean nothing)."""

from __future__ import annotations

import torch

from ..data.classes import CLASSES, label_caption
from ..data.montage import model_ch_names
from .pipeline_neuroimagen import NeuroImagenPipeline


def make_tiny_pipeline(seed: int = 0, seq_len: int = 8, hidden_dim: int = 384,
                       layout_prior: bool = False) -> NeuroImagenPipeline:
    """A NeuroImagenPipeline of tiny random components (a few MB), built in about a second.

    The EEG contract is the real one (128 channels, 440 samples at 1 kHz), so real trials go through it.
    ``layout_prior``: add a LayoutPrior whose templates are random colours, fully covering a box in the
    middle of the image (so the composite is easy to see in a test).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..models import CaptionBank, EEGEncoder, LayoutPrior, SaliencyGenerator, SemanticDecoder
    from ..training.unet import Config as UNetConfig
    from ..training.unet import build_scheduler

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the components' initialisers draw from the global generator: keep it local
        names = list(model_ch_names())
        encoder = EEGEncoder(ch_names=names, arch="conv", embed_dim=16)
        generator = SaliencyGenerator(feature_dim=16, noise_dim=8, image_size=32, base_channels=16)
        decoder = SemanticDecoder(ch_names=names, seq_len=seq_len, hidden_dim=hidden_dim, rank=4, hidden=16)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                            latent_channels=4, norm_num_groups=8, sample_size=32)
        unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=hidden_dim,
                                    attention_head_dim=4, norm_num_groups=8)
        prior = LayoutPrior(num_classes=len(CLASSES), template_size=8, feature_dim=16,
                            n_channels=len(names)) if layout_prior else None
    n_classes, n_detailed = len(CLASSES), 80
    label_states = torch.randn(n_classes, seq_len, hidden_dim, generator=g)
    detailed_states = torch.randn(n_detailed, seq_len, hidden_dim, generator=g)
    bank = CaptionBank.build(
        [label_caption(c.index) for c in CLASSES], label_states, torch.randn(1, seq_len, hidden_dim, generator=g),
        [f"a drawing of {CLASSES[k % n_classes].name}, number {k}" for k in range(n_detailed)], detailed_states,
        [k % n_classes for k in range(n_detailed)], temperature=0.05)
    if prior is not None:
        prior.templates.copy_(torch.rand(n_classes, 3, 1, 1, generator=g).expand_as(prior.templates) * 2 - 1)
        prior.coverage.fill_(1.0)
        prior.eval()
    pipe = NeuroImagenPipeline(eeg_encoder=encoder.eval(), saliency_generator=generator.eval(),
                               semantic_decoder=decoder.eval(), caption_bank=bank, vae=vae.eval(), unet=unet.eval(),
                               scheduler=build_scheduler(UNetConfig()), layout_prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe
