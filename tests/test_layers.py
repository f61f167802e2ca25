"""The library's layers: inference never loads training code or the UI, the data layer never loads the models.

Each import runs in a fresh interpreter, so what another test imported first cannot hide a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_modules(module: str) -> list[str]:
    """The names in ``sys.modules`` after ``import module`` in a fresh interpreter started at the repository root."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def _under(names: list[str], package: str) -> list[str]:
    return [n for n in names if n == package or n.startswith(package + ".")]


@pytest.mark.parametrize("module", ["neuroimagen.pipelines", "neuroimagen.models", "neuroimagen.models.diffusion"])
def test_inference_loads_no_training_code_and_no_ui(module):
    loaded = loaded_modules(module)
    assert module in loaded
    assert _under(loaded, "neuroimagen.training") == []
    assert _under(loaded, "gradio") == []


def test_the_data_layer_loads_no_models():
    loaded = loaded_modules("neuroimagen.data")
    assert "neuroimagen.data" in loaded
    assert _under(loaded, "neuroimagen.models") == []
    assert _under(loaded, "neuroimagen.pipelines") == []
    assert _under(loaded, "neuroimagen.training") == []


def test_importing_the_pipeline_prints_nothing():
    """transformers' notice that it falls back to PIL image processors without torchvision (printed on every
    import through diffusers' Stable Diffusion pipelines) is silenced where the pipeline imports them."""
    run = subprocess.run([sys.executable, "-c", "import neuroimagen.pipelines"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and "torchvision" not in run.stderr, run.stderr
