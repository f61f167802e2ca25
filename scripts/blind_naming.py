"""A blind naming test of reconstructions: mix the reconstruction rows of grids, shuffle, have judges name them.

    python scripts/reconstruct_grid.py --per-class 3 --out /tmp/a.png                      # checkpoint A
    python scripts/reconstruct_grid.py --per-class 3 --checkpoint OTHER --out /tmp/b.png   # checkpoint B, same trials
    python scripts/blind_naming.py make --per-class 3 --out /tmp/blind --key /tmp/key.json a=/tmp/a.png b=/tmp/b.png
    # each judge names every image of one /tmp/blind/setN/ (40 images, 256 x 256) by forced choice among the 40
    # class names (neuroimagen.data.classes), without the key, and writes {"img00.png": {"class": ...}, ...}
    python scripts/blind_naming.py score --key /tmp/key.json /tmp/answers_set0.json /tmp/answers_set1.json ...

The shipped examples (``examples/index.json``), each reconstructed at the defaults with every seed, as
``tests/test_shipped_model.py`` does; every set holds all of them, shuffled with its own seed, one set per judge::

    python scripts/blind_naming.py examples --out /tmp/blind_ex --key /tmp/key_ex.json --seeds 0 1 --sets 2
    python scripts/blind_naming.py score --key /tmp/key_ex.json /tmp/answers_set0.json /tmp/answers_set1.json

Tiles of the grids' reconstruction rows (``reconstruct_grid.py`` layout: bands of 20 columns, rows stimulus,
saliency map, reconstruction; the trials of each class in turn) are mixed across the grids, shuffled with a
fixed seed and cut into sets of 40, so a judge's leniency falls on every grid alike. ``score`` prints, per grid,
how many were named right, and for two grids how many trials were named right in one version only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def make(per_class: int, out: Path, key_path: Path, grids: dict[str, str], seed: int = 7) -> int:
    from PIL import Image

    tiles = []
    for name, path in grids.items():
        im = Image.open(path).convert("RGB")
        side = im.size[0] // 20
        bands = -(-40 * per_class // 20)
        gap = (im.size[1] - 3 * side * bands) // max(1, bands - 1)  # the white line between bands, as saved
        if bands > 1 and im.size[1] != 3 * side * bands + gap * (bands - 1):
            raise ValueError(f"{path}: {im.size[0]} x {im.size[1]} px is not a reconstruct_grid.py grid of "
                             f"{40 * per_class} trials ({bands} bands): was it made with --per-class {per_class}?")
        for k in range(40 * per_class):
            band, col = divmod(k, 20)
            y = band * (3 * side + gap) + 2 * side
            tiles.append((name, k // per_class, k, im.crop((col * side, y, (col + 1) * side, y + side))))
    random.Random(seed).shuffle(tiles)
    key = {}
    for i, (name, cls, trial, tile) in enumerate(tiles):
        folder = out / f"set{i // 40}"
        folder.mkdir(parents=True, exist_ok=True)
        tile.resize((256, 256), Image.LANCZOS).save(folder / f"img{i % 40:02d}.png")
        key[f"set{i // 40}/img{i % 40:02d}.png"] = {"class": cls, "grid": name, "trial": trial}
    key_path.write_text(json.dumps(key))
    return len(tiles)


def make_examples(checkpoint: Path, out: Path, key_path: Path, seeds: list[int], sets: int, seed: int = 7) -> int:
    """Write ``sets`` sets of every shipped example's reconstructions (one per seed, 256 x 256), each set shuffled
    with its own seed, and the key (``trial``: the example's index; ``file``, ``seed``)."""
    import numpy as np
    import torch
    from PIL import Image

    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data import preprocess, read_trial

    root = Path(__file__).resolve().parents[1] / "examples"
    entries = json.loads((root / "index.json").read_text())
    entries = entries["examples"] if isinstance(entries, dict) else entries
    pipe = NeuroImagenPipeline.from_pretrained(checkpoint)
    pipe.set_progress_bar_config(disable=True)
    torch.set_num_threads(1)  # the shipped-model test's float sums
    tiles = []
    for t, e in enumerate(entries):
        trial = preprocess(read_trial(root / e["file"]))
        for s in seeds:
            img = pipe(trial, generator=torch.Generator().manual_seed(s), output_type="np").images[0]
            tile = Image.fromarray((img * 255).round().clip(0, 255).astype(np.uint8))
            tiles.append(({"class": e["label"], "grid": "examples", "trial": t, "file": e["file"], "seed": s}, tile))
    key = {}
    for n in range(sets):
        order = tiles[:]
        random.Random(seed + n).shuffle(order)
        folder = out / f"set{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (k, tile) in enumerate(order):
            tile.resize((256, 256), Image.LANCZOS).save(folder / f"img{i:02d}.png")
            key[f"set{n}/img{i:02d}.png"] = k
    key_path.write_text(json.dumps(key))
    return len(key)


def score(key: dict, answers: list[dict]) -> dict:
    from neuroimagen.data.classes import CLASSES

    names = [c.name for c in CLASSES]
    right: dict[str, list[int]] = {}
    by_trial: dict[int, dict[str, bool]] = {}
    for s, ans in enumerate(answers):
        for f, a in ans.items():
            k = key[f"set{s}/{f}"]
            ok = a["class"] == names[k["class"]]
            r = right.setdefault(k["grid"], [0, 0])
            r[0], r[1] = r[0] + ok, r[1] + 1
            by_trial.setdefault(k["trial"], {})[k["grid"]] = ok
    out = {g: {"named": r[0], "of": r[1], "rate": round(r[0] / r[1], 4)} for g, r in right.items()}
    missed: dict[str, list[str]] = {}  # with examples' keys: each tile a judge did not name, and what was said
    for s, ans in enumerate(answers):
        for f, a in ans.items():
            k = key[f"set{s}/{f}"]
            if "file" in k and a["class"] != names[k["class"]]:
                missed.setdefault(f"{k['file']} seed {k['seed']}", []).append(a["class"])
    if missed:
        out["missed"] = missed
    if len(right) == 2:
        a, b = sorted(right)
        out[f"only_{a}"] = sum(1 for t in by_trial.values() if t.get(a) and not t.get(b))
        out[f"only_{b}"] = sum(1 for t in by_trial.values() if t.get(b) and not t.get(a))
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--per-class", type=int, required=True, help="the grids' --per-class")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--key", type=Path, required=True, help="where the answer key goes (keep it from the judges)")
    m.add_argument("grids", nargs="+", help="NAME=grid.png")
    e = sub.add_parser("examples")
    e.add_argument("--checkpoint", type=Path, default=Path("checkpoints/neuroimagen-tiny"))
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--key", type=Path, required=True, help="where the answer key goes (keep it from the judges)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    e.add_argument("--sets", type=int, default=2, help="one set per judge, each with every image")
    e.add_argument("--shuffle-seed", type=int, default=7, help="set N is shuffled with this seed + N")
    s = sub.add_parser("score")
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("answers", nargs="+", type=Path, help="the judges' JSON files, set0 first")
    args = p.parse_args()
    if args.cmd == "examples":
        print(make_examples(args.checkpoint, args.out, args.key, args.seeds, args.sets, args.shuffle_seed), "images in", args.out)
    elif args.cmd == "make":
        grids = dict(g.split("=", 1) for g in args.grids)
        print(make(args.per_class, args.out, args.key, grids), "images in", args.out)
    else:
        answers = [json.loads(f.read_text()) for f in args.answers]
        print(json.dumps(score(json.loads(args.key.read_text()), answers), indent=1))


if __name__ == "__main__":
    main()
