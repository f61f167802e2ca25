"""Copy a pipeline folder with some components' weights shuffled: a broken checkpoint that still loads.

    python scripts/shuffle_checkpoint.py --out /tmp/shuffled
    NEUROIMAGEN_TEST_CHECKPOINT=/tmp/shuffled python -m pytest -q tests/test_shipped_model.py   # must fail

Each tensor of the named components (default: the EEG side, ``eeg_encoder``, ``semantic_decoder`` and, when the
folder has one, ``class_decoder``, which decodes the class on its own) keeps
its shape, dtype and values, in a random order (seeded), so the folder loads and runs but decodes nothing.
It shows that the tests of the shipped model can fail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


EEG_SIDE = ("eeg_encoder", "semantic_decoder", "class_decoder")


def shuffle_checkpoint(src: str | Path, out: str | Path, components=None, seed: int = 0) -> Path:
    """Copy ``src`` to ``out`` (replaced) and shuffle the elements of every tensor of ``components`` (None: those of
    ``EEG_SIDE`` the folder has)."""
    src, out = Path(src), Path(out)
    if components is None:
        components = [c for c in EEG_SIDE if (src / c).is_dir()]
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"No pipeline folder at {src} (model_index.json is missing).")
    if out.resolve() == src.resolve():
        raise ValueError("--out must differ from --checkpoint: the shuffled copy never replaces the original.")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    g = torch.Generator().manual_seed(seed)
    for name in components:
        files = sorted((out / name).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"No safetensors under {out / name}: components are folders of {src}.")
        for f in files:
            tensors = load_file(f)
            shuffled = {k: t.flatten()[torch.randperm(t.numel(), generator=g)].reshape(t.shape).contiguous()
                        for k, t in tensors.items()}
            save_file(shuffled, f, metadata={"format": "pt"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "neuroimagen-tiny"), help="pipeline folder")
    p.add_argument("--out", required=True, help="where the shuffled copy is written (replaced)")
    p.add_argument("--components", nargs="+", default=None,
                   help=f"default: those of {', '.join(EEG_SIDE)} the folder has")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(shuffle_checkpoint(args.checkpoint, args.out, args.components, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
