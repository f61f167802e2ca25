"""Tiny seeded components for the tests (and the load test): random weights, so the images mean nothing.

As diffusers keeps its ``get_dummy_components`` with its tests, this is a test fixture, not library code:
``from tiny_pipeline import make_tiny_pipeline`` in a test, ``from tests.tiny_pipeline import ...`` from the
repository's root (``benchmarks``/``demo`` tools).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from neuroimagen.data.classes import CLASSES, label_caption
from neuroimagen.data.montage import model_ch_names
from neuroimagen.models import CaptionBank, EEGEncoder, LayoutPrior, SaliencyGenerator, SemanticDecoder
from neuroimagen.models.diffusion import build_scheduler
from neuroimagen.pipelines import NeuroImagenPipeline


def seeded(build, seed: int = 0):
    """``build()``, its initialisers drawing from a stream seeded with ``seed``.

    torch's module initialisers take no generator: they draw from the global one, so it is forked (saved and
    given back) around the call and no global random state leaks out of a fixture.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _tiny_components(seq_len: int, hidden_dim: int, layout_prior: bool) -> dict:
    names = list(model_ch_names())
    return {
        "eeg_encoder": EEGEncoder(ch_names=names, arch="conv", embed_dim=16),
        "saliency_generator": SaliencyGenerator(feature_dim=16, noise_dim=8, image_size=32, base_channels=16),
        "semantic_decoder": SemanticDecoder(ch_names=names, seq_len=seq_len, hidden_dim=hidden_dim, rank=4, hidden=16),
        "vae": AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                             latent_channels=4, norm_num_groups=8, sample_size=32),
        "unet": UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                     layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=hidden_dim,
                                     attention_head_dim=4, norm_num_groups=8),
        "layout_prior": LayoutPrior(num_classes=len(CLASSES), template_size=8, feature_dim=16,
                                    n_channels=len(names)) if layout_prior else None,
    }


def _tiny_caption_bank(seq_len: int, hidden_dim: int, g: torch.Generator, n_detailed: int = 80) -> CaptionBank:
    n_classes = len(CLASSES)
    label_states = torch.randn(n_classes, seq_len, hidden_dim, generator=g)
    detailed_states = torch.randn(n_detailed, seq_len, hidden_dim, generator=g)
    return CaptionBank.build(
        [label_caption(c.index) for c in CLASSES], label_states, torch.randn(1, seq_len, hidden_dim, generator=g),
        [f"a drawing of {CLASSES[k % n_classes].name}, number {k}" for k in range(n_detailed)], detailed_states,
        [k % n_classes for k in range(n_detailed)], temperature=0.05)


def make_tiny_pipeline(seed: int = 0, seq_len: int = 8, hidden_dim: int = 384,
                       layout_prior: bool = False) -> NeuroImagenPipeline:
    """A NeuroImagenPipeline of tiny random components (a few MB), built in about a second.

    The EEG contract is the real one (128 channels, 440 samples at 1 kHz), so real trials go through it.
    ``layout_prior``: add a LayoutPrior whose templates are random colours, fully covering a box in the
    middle of the image (so the composite is easy to see in a test).
    """
    g = torch.Generator().manual_seed(seed)
    parts = seeded(lambda: _tiny_components(seq_len, hidden_dim, layout_prior), seed)
    bank = _tiny_caption_bank(seq_len, hidden_dim, g)
    prior = parts.pop("layout_prior")
    if prior is not None:
        prior.templates.copy_(torch.rand(len(CLASSES), 3, 1, 1, generator=g).expand_as(prior.templates) * 2 - 1)
        prior.coverage.fill_(1.0)
        prior.eval()
    pipe = NeuroImagenPipeline(**{k: m.eval() for k, m in parts.items()}, caption_bank=bank, scheduler=build_scheduler(),
                               layout_prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe
