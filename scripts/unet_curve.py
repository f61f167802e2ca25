"""Quality of a UNet run against the CPU-hours it cost: each EMA snapshot scored like the shipped UNet.

    python scripts/unet_curve.py --run runs/unet-v2/unet --out reports/unet_curve/unet-v2 [--per-class 2] [--split val]

For every ``<run>/snapshots/stepN`` (the ``unet`` stage's ``snapshot_every``) and the run's final weights,
``scripts/reconstruct_grid.py --unet`` reconstructs the same held-out trials with the checkpoint's other components
at the app's defaults and scores them (both evaluation classifiers, SSIM); the shipped UNet is scored the same way
as the reference. The CPU-seconds of a snapshot are the run's cumulative ``cpu_s`` at that step (its
``metrics.json`` history); the shipped UNet's are its stage's in ``<checkpoint>/training.json``. Writes
``<out>/curve.json``, ``<out>/README.md`` (the table) and ``<out>/curve.png``; each grid is written as
``<out>/grids/<name>.png`` (with its numbers as ``.json``) for the eye: 1.2 MB each, so a committed report keeps the
``.json`` files and at most a few grids, at half size as JPEG. ``--split val`` (the default) keeps the test trials out of the choice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("reconstruction_class_acc", "ssim_reconstruction")


def score(unet: Path | None, out_png: Path, args) -> dict:
    """reconstruct_grid.py's numbers for ``unet`` swapped into the checkpoint (None: the checkpoint's own)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "reconstruct_grid.py"), "--checkpoint", args.checkpoint,
           "--per-class", str(args.per_class), "--split", args.split, "--out", str(out_png)]
    if unet is not None:
        cmd += ["--unet", str(unet)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out_png.with_suffix(".json").read_text())


def cpu_at(history: list[dict], step: int) -> float | None:
    """The run's cumulative CPU-seconds at ``step`` (None when its history has no ``cpu_s`` there)."""
    return next((h.get("cpu_s") for h in history if h["step"] == step), None)


def row(name: str, steps: int | None, cpu_s: float | None, res: dict) -> dict:
    robust = res.get("robust_classifier") or {}
    return {"name": name, "steps": steps, "cpu_h": None if cpu_s is None else round(cpu_s / 3600, 2),
            "classifier": res["reconstruction_class_acc"], "robust_classifier": robust.get("reconstruction_class_acc"),
            "ssim": res["ssim_reconstruction"], "trials": res["trials"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a unet stage's output folder (runs/NAME/unet)")
    p.add_argument("--checkpoint", default="checkpoints/neuroimagen-tiny")
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    run, out = Path(args.run), Path(args.out)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["history"]
    shipped = next(s for s in json.loads((Path(args.checkpoint) / "training.json").read_text()) if s["stage"] == "unet")
    rows = [row("shipped", shipped.get("steps"), shipped["cpu_s"], score(None, out / "grids" / "shipped.png", args))]
    snaps = sorted((run / "snapshots").glob("step*")) if (run / "snapshots").is_dir() else []
    for snap in snaps:
        step = int(snap.name[4:])
        rows.append(row(snap.name, step, cpu_at(history, step), score(snap, out / "grids" / f"{snap.name}.png", args)))
        print(json.dumps(rows[-1]), flush=True)
    if not snaps or int(snaps[-1].name[4:]) != metrics["steps"]:
        rows.append(row("final", metrics["steps"], metrics.get("cpu_time_s"), score(run, out / "grids" / "final.png", args)))
    result = {"run": str(run), "config": metrics.get("config"), "checkpoint": args.checkpoint, "split": args.split,
              "per_class": args.per_class, "rows": rows,
              "command": "python scripts/unet_curve.py " + " ".join(sys.argv[1:])}
    (out / "curve.json").write_text(json.dumps(result, indent=1))
    write_readme(out, result)
    plot(out / "curve.png", rows)
    print(json.dumps(rows, indent=1))


def write_readme(out: Path, result: dict) -> None:
    lines = [f"# UNet quality against CPU-hours: `{result['run']}`", "",
             f"Made by `{result['command']}` (the `{result['split']}` split, the first {result['per_class']} trials of "
             "each class, the app's defaults, the checkpoint's other components). `classifier` / `robust` are the "
             "evaluation classifiers' top-1 on the reconstructions, `ssim` against the stimuli.", "",
             "| UNet | steps | CPU-h | classifier | robust | SSIM |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        robust = "n/a" if r["robust_classifier"] is None else f"{100 * r['robust_classifier']:.1f} %"
        lines.append(f"| {r['name']} | {r['steps']} | {r['cpu_h']} | {100 * r['classifier']:.1f} % | {robust} | "
                     f"{r['ssim']:.3f} |")
    lines += ["", "The run's config:", "", "```json", json.dumps(result["config"], indent=1), "```", ""]
    (out / "README.md").write_text("\n".join(lines))


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    run = [r for r in rows if r["name"] != "shipped" and r["cpu_h"] is not None]
    for key, label in (("classifier", "classifier"), ("robust_classifier", "robust classifier")):
        ax.plot([r["cpu_h"] for r in run], [100 * r[key] for r in run if r[key] is not None], "o-", label=f"run: {label}")
        ship = rows[0]
        if ship[key] is not None:
            ax.scatter([ship["cpu_h"]], [100 * ship[key]], marker="*", s=120, label=f"shipped: {label}")
    ax.set(xlabel="UNet training CPU-hours", ylabel="reconstructions recognised (%)", ylim=(0, 100))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
