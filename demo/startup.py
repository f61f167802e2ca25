"""How ``app.py`` starts, without Gradio: its arguments (flags, else environment variables, else defaults), the
device and dtypes the pipeline loads in, and ZeroGPU's ``@spaces.GPU`` where the ``spaces`` package is installed.

On a Hugging Face Space ``python app.py`` runs with no arguments: ``NEUROIMAGEN_CHECKPOINT`` and
``NEUROIMAGEN_SD_MODEL`` (the Space's variables) say what ``--checkpoint`` and ``--sd-model`` would; a flag wins
over its variable. See docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from .settings import ROOT

DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "neuroimagen-tiny"
CHECKPOINT_ENV = "NEUROIMAGEN_CHECKPOINT"
SD_MODEL_ENV = "NEUROIMAGEN_SD_MODEL"
# How long one Reconstruct asks a ZeroGPU for, in seconds (spaces.GPU's default is 60; ZeroGPU checks what is
# asked against the visitor's remaining quota, so asking less lets more visitors run). The largest request the app allows (50 steps at strength 1 with the two ablation runs,
# SD 1.5 at 512 x 512: 252 TFLOPs) is estimated at ~16 s on half an A100 at 10 % of its peak (docs/DEPLOY.md).
GPU_DURATION = 30
# On CUDA the diffusion stage (where the FLOPs are) runs in float16; the EEG models, a few MB, stay in float32
# (the layout prior computes in float32, and the decoding check was calibrated on float32 outputs).
CUDA_DTYPES = {"unet": torch.float16, "vae": torch.float16, "text_encoder": torch.float16, "default": torch.float32}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The app's arguments: each flag, else its environment variable (an empty one counts as unset), else the
    default. A checkpoint that is not a NeuroImagen folder, or an SD model that is neither a folder nor a hub id,
    exits with an argparse error that names where the value came from, what was expected and what came."""
    environ = os.environ if environ is None else environ
    p = argparse.ArgumentParser(prog="app.py", description="NeuroImagen: reconstruct the seen image from EEG.")
    p.add_argument("--checkpoint", default=None,
                   help=f"NeuroImagen folder (default: ${CHECKPOINT_ENV}, else {DEFAULT_CHECKPOINT})")
    p.add_argument("--sd-model", default=None,
                   help=f"Stable Diffusion hub id or folder for the last stage (GPU; default: ${SD_MODEL_ENV}, else "
                        "the checkpoint's own tiny latent diffusion)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--examples", default=None, help="folder of example trials (default: examples/)")
    args = p.parse_args(argv)
    try:
        args.checkpoint = check_checkpoint(*_resolve(args.checkpoint, "--checkpoint", CHECKPOINT_ENV, environ,
                                                     DEFAULT_CHECKPOINT))
        sd_model = _resolve(args.sd_model, "--sd-model", SD_MODEL_ENV, environ, None)
        args.sd_model = None if sd_model[0] is None else check_sd_model(*sd_model)
    except ValueError as err:
        p.error(str(err))
    return args


def _resolve(flag, flag_name: str, env_name: str, environ: Mapping[str, str], default):
    """(value, where it came from): the flag, else the environment variable, else the default."""
    if flag is not None:
        return flag, flag_name
    if environ.get(env_name):
        return environ[env_name], f"${env_name}"
    return default, "the default"


def check_checkpoint(value: str | Path, source: str = "--checkpoint") -> Path:
    """``value`` as a NeuroImagen folder (one with ``model_index.json``), else a ValueError saying what came."""
    path = Path(value).expanduser()
    if (path / "model_index.json").is_file():
        return path
    found = "a folder without model_index.json" if path.is_dir() else "no such folder"
    hint = (" Build it with 'python -m neuroimagen.train all --config configs/tiny.json'." if source == "the default"
            else "")
    raise ValueError(f"{source} must be a NeuroImagen checkpoint folder (with model_index.json, as "
                     f"save_pretrained writes it), but got {str(value)!r}: {found}.{hint}")


def check_sd_model(value: str, source: str = "--sd-model") -> str:
    """``value`` as a Stable Diffusion folder (with ``model_index.json``) or a hub id (``owner/name``, fetched
    when the pipeline loads), else a ValueError saying what came."""
    path = Path(value).expanduser()
    if (path / "model_index.json").is_file():
        return str(path)
    if not path.exists() and _HUB_ID.fullmatch(value) and not value.startswith("."):
        return value
    found = ("a folder without model_index.json" if path.is_dir() else "a file" if path.exists() else
             "no such folder, and not a hub id")
    raise ValueError(f"{source} must be a Stable Diffusion folder (with model_index.json) or a hub id such as "
                     f"'stable-diffusion-v1-5/stable-diffusion-v1-5', but got {value!r}: {found}.")


def gpu_decorator() -> Callable | None:
    """ZeroGPU's ``spaces.GPU`` when the ``spaces`` package is installed, else None.

    Call it before anything asks torch about CUDA: on a ZeroGPU Space importing ``spaces`` is what lets the
    pipeline move to "cuda" at start-up (the GPU itself is attached only while a decorated function runs).
    Elsewhere ``spaces.GPU`` changes nothing (its documented behaviour).
    """
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU


def on_gpu(fn: Callable, duration: int = GPU_DURATION) -> Callable:
    """``fn`` under ``@spaces.GPU(duration=...)`` when ``spaces`` is installed; ``fn`` itself otherwise."""
    gpu = gpu_decorator()
    return fn if gpu is None else gpu(duration=duration)(fn)


def load_pipeline(checkpoint: str | Path, sd_model: str | None = None, device: str | None = None):
    """The pipeline on ``device`` (default: CUDA when available), its diffusion stage in float16 on CUDA."""
    from neuroimagen import NeuroImagenPipeline

    gpu_decorator()  # before torch.cuda.is_available(): see its docstring
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"torch_dtype": CUDA_DTYPES} if torch.device(device).type == "cuda" else {}
    return NeuroImagenPipeline.from_pretrained(checkpoint, sd_model=sd_model, **dtype).to(device)
