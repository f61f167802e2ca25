"""Count the FLOPs of Stable Diffusion 1.5's parts at 512 x 512, for the time estimates of docs/DEPLOY.md.

    python scripts/sd_flops.py

The parts are built with SD 1.5's architecture on PyTorch's meta device (no weights, no download, no memory)
and run once under ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; convolutions, matrix
products and attention; norms and activations are not counted). Prints JSON: parameters (millions) and TFLOPs
of one UNet call on a classifier-free-guidance batch of 2, the VAE encoder (the init image), the VAE decoder and
the CLIP text encoder on 2 prompts.
"""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel


def sd15_parts() -> dict[str, torch.nn.Module]:
    """SD 1.5's unet, vae and text encoder (their published configs), on the meta device."""
    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel(
                sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
            "vae": AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
            "text_encoder": CLIPTextModel(CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                max_position_embeddings=77)),
        }


def tflops(run) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run()
    return round(counter.get_total_flops() / 1e12, 3)


def main() -> dict:
    parts = sd15_parts()
    unet, vae, text = parts["unet"], parts["vae"], parts["text_encoder"]
    with torch.device("meta"):
        out = {
            "params_m": {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 1) for k, m in parts.items()},
            "tflops": {
                "unet_cfg_batch2": tflops(lambda: unet(torch.randn(2, 4, 64, 64), torch.tensor([500, 500]),
                                                       encoder_hidden_states=torch.randn(2, 77, 768))),
                "vae_encode_512": tflops(lambda: vae.encode(torch.randn(1, 3, 512, 512))),
                "vae_decode_512": tflops(lambda: vae.decode(torch.randn(1, 4, 64, 64))),
                "text_encoder_2_prompts": tflops(lambda: text(torch.zeros(2, 77, dtype=torch.long))),
            },
        }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
