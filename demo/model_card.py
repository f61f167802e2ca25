"""The checkpoint's model card and a one-line summary of the loaded pipeline, for the page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def describe(pipe) -> dict:
    """Facts about the loaded pipeline for the page: device, diffusion model, sizes and folder."""
    eeg_models = ("eeg_encoder", "saliency_generator", "semantic_decoder", "class_decoder")
    n = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
         for name in (*eeg_models, "vae", "unet") if getattr(pipe, name, None) is not None}
    return {"device": str(pipe.device), "diffusion": "Stable Diffusion" if pipe.text_encoder is not None else "tiny LDM",
            "unet_params_M": round(n["unet"] / 1e6, 2),
            "eeg_params_M": round(sum(n[k] for k in eeg_models if k in n) / 1e6, 2),
            "eeg_shape": pipe.eeg_shape, "sfreq": pipe.eeg_sfreq,
            "name_or_path": pipe.config.get("_name_or_path", "")}


def model_summary(pipe) -> str:
    """Device, diffusion model and sizes of the loaded pipeline, one line."""
    try:
        d = describe(pipe)
    except AttributeError:
        return f"Running on **{pipe.device}**."
    name = Path(str(d.get("name_or_path") or "")).name or "in-memory pipeline"
    return (f"Running on **{d['device']}** · model **{name}** · diffusion: {d['diffusion']} "
            f"(U-Net {d['unet_params_M']} M parameters) · EEG models {d['eeg_params_M']} M parameters")


def model_card(pipe) -> str | None:
    """The checkpoint's model card (README.md) text, when the pipeline was loaded from a folder."""
    path = Path(str(pipe.config.get("_name_or_path", "") or "")) / "README.md"
    return path.read_text() if path.is_file() else None


@dataclass
class ModelCard:
    """A model card split for display: its YAML metadata as a table, its body as markdown sections."""

    title: str  # the body's "# " heading ("" without one)
    metadata: str  # markdown table of the front matter ("" without one)
    intro: str  # the body up to its first "## " heading
    sections: list[tuple[str, str]]  # (heading, markdown) of each "## " section


def split_model_card(text: str) -> ModelCard:
    """Split a Hugging Face model card: ``---`` YAML front matter, then markdown.

    Markdown would render the front matter as a heading (its closing ``---`` underlines the lines above);
    here it becomes a two-column table, and the body is cut at its ``## `` headings.
    """
    import yaml

    metadata = ""
    match = re.match(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", text, flags=re.S)
    if match:
        text = text[match.end():]
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and meta:
            def cell(value) -> str:
                value = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
                return value.replace("|", "\\|").replace("\n", " ")

            metadata = "\n".join(["| metadata | |", "|---|---|"] + [f"| {k} | {cell(v)} |" for k, v in meta.items()])
    title = ""
    if match := re.match(r"\s*# +(.+?)\s*$", text, flags=re.M):
        title, text = match.group(1), text[match.end():]
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.M)  # [intro, heading, body, heading, body, ...]
    sections = [(parts[i].strip(), parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    return ModelCard(title=title, metadata=metadata, intro=parts[0].strip(), sections=sections)
