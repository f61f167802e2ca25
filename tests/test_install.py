"""The package installs: ``pip install`` of a copy of the source into a temporary folder (no dependency
downloads: ``--no-deps --no-build-isolation``), then the README's API example, run from another folder with
only that install on the path, and the console scripts the package declares."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("neuroimagen-train", "neuroimagen-evaluate", "neuroimagen-bench", "neuroimagen-data")


def readme_api_example() -> str:
    """The first python block of the README's "The Python API" section."""
    section = re.search(r"^## The Python API\n(.*?)^## ", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    assert section, "README.md has no '## The Python API' section"
    block = re.search(r"```python\n(.*?)```", section.group(1), flags=re.S)
    assert block, "the README's API section has no python example"
    return block.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps --target`` of a copy of the source (the clone is left as it was: no build/ or
    egg-info in it)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT / "neuroimagen", src / "neuroimagen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
                   check=True, cwd=tmp, timeout=300)
    return target


def _run(code_or_args: list[str], target: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}  # only the install: not the clone, not the current folder
    return subprocess.run(code_or_args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_readme_api_example_runs_from_another_folder(installed, tmp_path):
    """With the paths to the clone's checkpoint and example, the README's example runs outside the tree and
    imports the installed package."""
    code = readme_api_example()
    for rel in ("checkpoints/", "examples/"):
        assert f'"{rel}' in code, f"the README's API example no longer reads {rel}: update this test"
        code = code.replace(f'"{rel}', f'"{ROOT}/{rel}')
    code += "\nimport neuroimagen\nprint('FROM', neuroimagen.__file__)\n"
    proc = _run([sys.executable, "-c", code], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"FROM {installed}" in proc.stdout, proc.stdout
    assert (tmp_path / "reconstruction.png").is_file()


def test_the_console_scripts_are_installed(installed, tmp_path):
    """Each entry point the package declares is installed and starts (``neuroimagen-data --help``)."""
    bin_dir = installed / "bin"
    assert sorted(p.name for p in bin_dir.iterdir() if p.name.startswith("neuroimagen-")) == sorted(SCRIPTS)
    proc = _run([sys.executable, str(bin_dir / "neuroimagen-data"), "--help"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stimuli" in proc.stdout and "simulate" in proc.stdout
    data = installed / "neuroimagen" / "data" / "class_embeddings.npy"
    assert data.is_file(), "the package data (class_embeddings.npy) was not installed"
