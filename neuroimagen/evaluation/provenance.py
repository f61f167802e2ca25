"""Which weights a measurement was made on: a digest of each component's safetensors files.

A folder's path says nothing about its weights (a stage retrained into the same folder keeps the path), so
reports, the benchmark and the model card record these digests and compare them before they put two
measurements side by side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_CHARS = 16  # hex digits of SHA-256 kept: enough to tell weights apart, short enough to read


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:DIGEST_CHARS]


def weights_digest(folder: str | Path) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of the safetensors files of each component of a folder.

    Parameters
    ----------
    folder : str | Path
        A pipeline folder (one sub-folder per component, e.g. ``checkpoints/neuroimagen-tiny``) or a single
        model's folder.

    Returns
    -------
    digest : dict
        ``{component folder name: digest}`` for every sub-folder with safetensors files, and ``"."`` for the
        folder's own safetensors files (a single model's folder). Empty when there are none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder at {folder}: expected a pipeline or model folder with safetensors.")
    out = {}
    own = sorted(folder.glob("*.safetensors"))
    if own:
        out["."] = _digest(own)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.safetensors"))
        if files:
            out[sub.name] = _digest(files)
    return out


def network_digest(path: str | Path) -> str:
    """Digest of an evaluation network given by path: its file (any format), or a folder's own weights files."""
    path = Path(path)
    if path.is_file():
        return _digest([path])
    files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".pth", ".pt", ".bin", ".tar"))
    return _digest(files) if files else ""


# Components that change no image, caption or class of the pipeline's output and no earlier score: a whole-pipeline
# measurement stays valid when one of them is added (the decoding check only adds fields to the output; a second,
# robust evaluation classifier adds its own scores beside the first one's, which it leaves as they were).
OUTPUT_NEUTRAL = ("decoding_check", "eval_classifier_robust")


def same_weights(recorded: dict[str, str] | None, current: dict[str, str], complete: bool = False) -> bool:
    """Whether every component ``recorded`` names has the same digest in ``current`` (False when unknown).

    ``complete``: the recording measured the whole pipeline (a reconstruction, a benchmark), so ``current`` must
    also have no component the recording lacks (a component added since, e.g. a ``class_decoder``, changes the
    output), except the ``OUTPUT_NEUTRAL`` ones.
    """
    if recorded is None or any(current.get(k) != v for k, v in recorded.items()):
        return False
    return not complete or not (set(current) - set(recorded) - set(OUTPUT_NEUTRAL))


def part_weights(metrics: dict, part: str) -> dict[str, str] | None:
    """The digests of the weights one part of an evaluation report (``metrics.json``) was measured on.

    ``{}`` for a part that runs no weights; None when the report was written before digests were recorded and the
    part ran weights (the reconstructions; the baselines with our decoders' rows), which then cannot be identified.
    """
    recorded = metrics.get("part_weights")
    if recorded is not None and part in recorded:
        return recorded[part]
    if part == "reconstruction" or (part == "baselines" and any(
            m.startswith("ours") for m in (metrics.get("baselines") or {}).get("methods", {}))):
        return None
    return {}
