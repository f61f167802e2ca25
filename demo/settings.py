"""The app's settings in one place, without Gradio (the load test and the tests import them too).

The reconstruction defaults are the pipeline's own (``NeuroImagenPipeline.__call__``); everything else here is
the app's: where it finds its files, what a request may ask for, and what one request may cost.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from neuroimagen.data.companions import COMPANION_EXTENSIONS as COMPANIONS
from neuroimagen.data.io import READERS
from neuroimagen.data.montage import CROP, SFREQ
from neuroimagen.data.simulate import PRESETS
from neuroimagen.pipelines.pipeline_neuroimagen import NeuroImagenPipeline

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
STIMULI_DIR = ROOT / "data" / "stimuli"
# Top-1 of the class decoded from trials simulated on each standard cap (scripts/cap_accuracy.py, demo preset):
# an upload's expected accuracy is read from it by its channel count.
CAP_METRICS = ROOT / "reports" / "caps" / "demo" / "metrics.json"

# ---- the reconstruction: the pipeline's defaults, and the bounds of the app's sliders
_CALL = inspect.signature(NeuroImagenPipeline.__call__).parameters
STRENGTH: float = _CALL["strength"].default  # 0.5
GUIDANCE_SCALE: float = _CALL["guidance_scale"].default  # 5.0
NUM_INFERENCE_STEPS: int = _CALL["num_inference_steps"].default  # 25
MAX_STEPS = 50  # the steps slider's maximum: the API refuses more
CAPTION_SOURCE = "label"  # the top decoded caption, as shown (the pipeline also offers "predicted", "detailed")
MAX_SEED = 2**31 - 1

# ---- the trial
SOURCES = ("example", "upload", "simulate")
TRIAL_EXTENSIONS = tuple(READERS)  # .npz .npy .pth .fif .edf .bdf .set .vhdr
COMPANION_EXTENSIONS = tuple(e for exts in COMPANIONS.values() for e in exts)  # .eeg .vmrk (BrainVision) .fdt
UPLOAD_EXTENSIONS = TRIAL_EXTENSIONS + COMPANION_EXTENSIONS
EPOCHS_SUFFIXES = ("-epo.fif", "_epo.fif")  # MNE's names for epochs files (read_trial reads them as epochs)
MAX_OCCURRENCES = 100_000  # the occurrence slider's bound for API calls (the page sets it to the event's count)
NOISE_PRESETS = tuple(PRESETS)  # "demo", "realistic"
N_SUBJECTS = 6
IMAGES_PER_CLASS = 50
DEFAULT_CLASS = 8  # the Simulate tab's first class (CLASS_NAMES[8])
TMIN = CROP[0] / SFREQ  # the model input starts 20 ms after stimulus onset
DEFAULT_LATENCY_MS = 170  # the N1 / N170 of visual evoked potentials
LATENCY_RANGE_MS = (20, 459)  # the topomap slider: the model's crop

# ---- what one request may cost (docs/RELIABILITY.md)
# A trial is ~0.5 s of 128 channels (~0.25-0.5 MB); these bound what one request can cost in memory and CPU
# before the model runs: Gradio refuses bigger files while they stream in (``max_file_size`` in launch()), and
# ``preprocess`` refuses, before any resampling, filtering or interpolation, trials over the library's limits
# (neuroimagen.data.preprocessing.check_trial_limits).
MAX_UPLOAD_BYTES = 10 * 2**20  # per file; the library's own limit (io.MAX_FILE_BYTES) is 100 MB
QUEUE_MAX_SIZE = 16  # waiting requests beyond this are refused at once instead of piling up
CONCURRENCY = 2  # events run at once (trial loads, topomaps); the reconstruction itself: 1
DELETE_CACHE = (1800, 3600)  # every 30 min, delete uploads and outputs older than 1 h
