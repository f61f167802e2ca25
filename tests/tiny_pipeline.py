"""Tiny seeded components for the tests (and the load test): random weights, so the images mean nothing.

As diffusers keeps its ``get_dummy_components`` with its tests, this is a test fixture, not library code:
``from tiny_pipeline import make_tiny_pipeline`` in a test, ``from tests.tiny_pipeline import ...`` from the
repository's root (``benchmarks``/``demo`` tools).
"""

from __future__ import annotations

import json
from pathlib import Path

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


def make_tiny_sd(path: str | Path, seed: int = 0, width: int = 32, max_length: int = 16) -> Path:
    """A tiny random Stable-Diffusion-shaped img2img model saved to ``path/sd`` (diffusers layout: ``text_encoder/``,
    ``tokenizer/``, ``unet/``, ``vae/``, ``scheduler/``), loadable by path like a hub model; returns that folder.

    The CLIP tokenizer is built offline from a byte-level vocabulary without merges (every character a token);
    the text encoder gives ``max_length`` x ``width`` states, the UNet attends to ``width``-wide ones and works on
    8 x 8 latents (16 x 16 images). Another ``seed`` gives the same architecture with other weights.
    """
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    # GPT-2/CLIP byte-level alphabet: printable bytes as themselves, the rest shifted past 255.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tok_dir = path / "tok"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=max_length)

    def build():
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=width, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=max_length, eos_token_id=len(vocab) - 1, bos_token_id=len(vocab) - 2,
            pad_token_id=len(vocab) - 1))
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=width,
                                    attention_head_dim=4, norm_num_groups=8)
        vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
        return text, unet, vae

    text, unet, vae = seeded(build, seed)
    sd = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    sd.save_pretrained(path / "sd")
    return path / "sd"
