"""Training presets: one JSON file with a ``paths`` section and one section per stage.

Each stage module (``neuroimagen.training.<stage>``) defines ``Config``, a dataclass whose fields have
commented defaults, and ``train(cfg, paths, resume=False, verbose=None) -> dict`` returning its metrics
(``verbose``: its progress lines, see :func:`~neuroimagen._logging.verbose`). A preset only lists what
differs from the defaults::

    {"paths": {"data": "data/sim_demo.pth", "splits": "data/sim_demo_splits.pth",
               "stimuli": "data/stimuli", "out": "runs/tiny"},
     "encoder": {"epochs": 30}, "unet": {"max_steps": 4000}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass
class Paths:
    data: str = "data/sim_demo.pth"  # EEG-ImageNet-format EEG (simulated or the published file)
    splits: str = "data/sim_demo_splits.pth"  # splits file, split 0 is used
    stimuli: str = "data/stimuli"  # stimulus folder with metadata.json
    captions: str | None = None  # captions file (python -m neuroimagen.data captions): the detailed captions
    #                              from it (BLIP, as the paper) instead of the stimulus metadata's
    out: str = "runs/tiny"  # each stage writes out/<stage>/; `assemble` writes out/pipeline/
    subject: int | None = None  # train on one subject only (None: all, as the paper)

    def stage_dir(self, stage: str) -> Path:
        return Path(self.out) / stage


def load_config(path: str | Path, overrides: dict | None = None) -> tuple[Paths, dict[str, dict]]:
    """Read a preset; return its ``Paths`` (with non-None ``overrides`` applied) and per-stage dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No config at {path}: expected a JSON preset such as configs/tiny.json.")
    raw = json.loads(path.read_text())
    known = {f.name for f in fields(Paths)}
    unknown = set(raw.get("paths", {})) - known
    if unknown:
        raise ValueError(f"Unknown keys in 'paths' of {path}: {sorted(unknown)}; allowed: {sorted(known)}.")
    paths = Paths(**raw.get("paths", {}))
    for k, v in (overrides or {}).items():
        if v is not None:
            setattr(paths, k, v)
    return paths, {k: v for k, v in raw.items() if k != "paths" and not k.startswith("_")}  # "_...": comments
