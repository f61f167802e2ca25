"""Start ``python app.py`` in a subprocess on a free loopback port, for the app tests.

The server runs ``$NEUROIMAGEN_TEST_CHECKPOINT`` if set, else the embedded checkpoint when it is present,
else a tiny random pipeline (``tests/tiny_pipeline.py``: ``make_tiny_pipeline``) saved to a temporary
folder, so the whole
``app.py`` path (argument parsing, loading, queue, launch) is what the tests drive. Example trials
come from ``examples/`` when they are there, else a few are written to a temporary folder.

One server per test session, shared by the test modules (import the ``app_server`` fixture):
it reports its start-up time and, when stopped, its peak resident memory (VmHWM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from benchmarks.loadtest import app_env, free_port, stop_process, wait_until_serving
from benchmarks.synthetic import synthetic_trial
from demo.startup import CHECKPOINT_ENV, SD_MODEL_ENV

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "neuroimagen-tiny"
EXAMPLES = ROOT / "examples"
START_TIMEOUT_S = 120


def has_checkpoint() -> bool:
    return (CHECKPOINT / "model_index.json").is_file()


def has_examples() -> bool:
    return (EXAMPLES / "index.json").is_file() or any(EXAMPLES.glob("*.npz"))


def write_tiny_checkpoint(out: Path) -> Path:
    from tiny_pipeline import make_tiny_pipeline

    make_tiny_pipeline(seed=0).save_pretrained(out)
    return out


def write_examples(out: Path, classes=(8, 32, 19), subject: int = 1) -> Path:
    """A few example trials written like ``scripts/make_examples.py`` writes them (``write_trial`` .npz +
    stimulus PNG + ``index.json``), for when ``examples/`` is not there yet.

    The EEG is noise plus a channel-specific evoked burst (``benchmarks.synthetic``): enough to exercise every
    view of the app.
    """
    from neuroimagen.data import write_trial
    from neuroimagen.data.classes import CLASSES
    from neuroimagen.data.stimuli import numbered_stimulus

    out.mkdir(parents=True, exist_ok=True)
    index = []
    for k, c in enumerate(classes):
        image = f"{CLASSES[c].synset}_{k + 1:04d}"
        img, _ = numbered_stimulus(c, k + 1)
        img.save(out / f"{image}.png")
        trial = synthetic_trial(np.random.default_rng(100 + k), subject=subject, label=c, stimulus=np.asarray(img))
        file = f"{image}_s{subject}.npz"
        write_trial(trial, out / file)
        index.append({"file": file, "label": c, "class_name": CLASSES[c].name, "subject": subject,
                      "stimulus": f"{image}.png", "image": image})
    (out / "index.json").write_text(json.dumps({"examples": index}, indent=1))
    return out


def write_recording(path: Path, npz: Path, ch_names, n_events: int = 3, gap_s: float = 0.4) -> dict[str, list]:
    """A continuous recording cut from an example trial: its channels ``ch_names`` (by name), the trial
    (stimulus onset at its first sample) repeated ``n_events`` times with ``gap_s`` of quiet EEG before each,
    "stimulus" annotations at the onsets and "response" ones 450 ms later. Written by the extension
    (``.fif``, or ``.vhdr`` with its ``.eeg``/``.vmrk``). Returns the events: description -> onsets (s).
    """
    import mne

    with np.load(npz, allow_pickle=False) as z:
        data, sfreq, names = z["data"], float(z["sfreq"]), [str(n) for n in z["ch_names"]]
    trial = data[[names.index(n) for n in ch_names]].astype(np.float64)
    gap = int(round(gap_s * sfreq))
    rng = np.random.default_rng(0)
    parts, onsets = [], []
    for k in range(n_events):
        parts.append(2e-6 * rng.standard_normal((len(ch_names), gap)) + trial[:, :1])  # quiet, joined to the trial
        onsets.append((k * (gap + trial.shape[1]) + gap) / sfreq)
        parts.append(trial)
    parts.append(2e-6 * rng.standard_normal((len(ch_names), gap)) + trial[:, -1:])
    raw = mne.io.RawArray(np.concatenate(parts, axis=1), mne.create_info(list(ch_names), sfreq, "eeg"), verbose="error")
    events = {"stimulus": onsets, "response": [t + 0.45 for t in onsets]}
    raw.set_annotations(mne.Annotations(events["stimulus"] + events["response"], 0.0,
                                        ["stimulus"] * n_events + ["response"] * n_events))
    if Path(path).suffix == ".vhdr":
        mne.export.export_raw(path, raw, fmt="brainvision", overwrite=True, verbose="error")
    else:
        raw.save(path, overwrite=True, verbose="error")
    return events


@dataclass
class AppServer:
    url: str
    proc: subprocess.Popen
    checkpoint: Path
    examples: Path
    startup_s: float
    log: Path
    peak_rss_mb: float | None = None
    gradio_dir: Path | None = None  # the app's GRADIO_TEMP_DIR (uploads and returned files)
    tmp_dir: Path | None = None  # the app's TMPDIR (tempfile.gettempdir() in the app process)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def rss_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory of the app process, in MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        vals = {ln.split(":")[0]: float(ln.split()[1]) / 1024 for ln in status if ln.startswith(("VmRSS", "VmHWM"))}
        return {"rss_mb": round(vals["VmRSS"], 1), "peak_rss_mb": round(vals["VmHWM"], 1)}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            try:
                self.peak_rss_mb = self.rss_mb()["peak_rss_mb"]
            except (OSError, KeyError):
                pass
            stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def start_app(checkpoint: Path | None = None, examples: Path | None = None, env: dict[str, str] | None = None,
              ) -> AppServer:
    """Run ``app.py`` on a free port and wait until it serves its page.

    ``env``: environment variables for the app, e.g. ``NEUROIMAGEN_SD_MODEL``; the test process's own
    ``NEUROIMAGEN_*`` variables are not passed on (the app would read them).
    """
    tmp = tempfile.TemporaryDirectory(prefix="neuroimagen-app-test-")
    if checkpoint is None and os.environ.get("NEUROIMAGEN_TEST_CHECKPOINT"):
        checkpoint = Path(os.environ["NEUROIMAGEN_TEST_CHECKPOINT"])
    if checkpoint is None:
        checkpoint = CHECKPOINT if has_checkpoint() else write_tiny_checkpoint(Path(tmp.name) / "tiny")
    if examples is None:
        examples = EXAMPLES if has_examples() else write_examples(Path(tmp.name) / "examples")
    port = free_port()
    log = Path(tmp.name) / "app.log"
    gradio_dir, tmp_dir = Path(tmp.name) / "gradio", Path(tmp.name) / "tmp"
    tmp_dir.mkdir()
    app_vars = {k: v for k, v in app_env(gradio_dir, tmp_dir).items() if k not in (CHECKPOINT_ENV, SD_MODEL_ENV)}
    app_vars.update(env or {})
    cmd = [sys.executable, str(ROOT / "app.py"), "--checkpoint", str(checkpoint), "--port", str(port),
           "--examples", str(examples)]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=app_vars, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    server = AppServer(url=url, proc=proc, checkpoint=checkpoint, examples=examples, startup_s=float("nan"),
                       log=log, gradio_dir=gradio_dir, tmp_dir=tmp_dir, _tmp=tmp)
    wait_until_serving(url, proc, log, t0, server.stop, timeout=START_TIMEOUT_S)
    server.startup_s = round(time.perf_counter() - t0, 2)
    return server


_SERVER: AppServer | None = None


@pytest.fixture(scope="session")
def app_server(request) -> AppServer:
    """The shared app server of this test session (started on first use, stopped at the end)."""
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = start_app()
        print(f"\n[app] serving {_SERVER.url} after {_SERVER.startup_s} s "
              f"(checkpoint {_SERVER.checkpoint}, "
              f"examples from {_SERVER.examples})")
        server = _SERVER

        def _stop():
            server.stop()
            print(f"\n[app] peak RSS {server.peak_rss_mb} MB")

        request.session.config.add_cleanup(_stop)
    return _SERVER
