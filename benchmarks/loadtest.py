"""Load test of the app: ``python -m benchmarks.loadtest [--tiny] [--clients 8] [--requests 5] [--url URL]``.

Starts ``app.py`` on a free loopback port (or uses ``--url`` of a running one, loopback only), then:

1. **load**: ``--clients`` gradio_client clients at once, each sending ``--requests`` reconstructions of
   its own uploaded trial with its own seeds, one after the other. Every result is checked against a
   direct pipeline call in this process with the same trial, seed and settings (the pixels must be
   equal), so a lost, swapped or mixed-up request shows as ``mismatched``.
2. **burst**: while one long request holds the pipeline, ``--burst`` requests arrive together, more than
   the app's queue holds (``demo.settings.QUEUE_MAX_SIZE`` = 16): the excess must be refused at once with
   Gradio's "queue full" error (counted as ``queue_full``, not as a failure), the rest must come back
   right, and the app must still answer the next request.

3. **corpus** (``--corpus DIR``, e.g. ``tests/data/bad``): before the load, every file of a bad-input
   corpus (its ``manifest.json``) is uploaded to ``/show_upload`` and ``/reconstruct`` one after the
   other. Every refusal must be explained (no generic Gradio error), and memory must stay bounded by what
   is used: the app's peak RSS over the corpus at most ``CORPUS_PEAK_MB`` and, a few seconds later,
   within ``CORPUS_AFTER_MB`` of its idle level (measured after one good request, before the corpus).

It samples the resident memory of the app's process and its children all along, and prints one JSON
report on stdout (``--out FILE`` also writes it): success rate, p50/p95 latency, peak memory, the burst's
outcome and, for an app it started, the files its requests left in Gradio's cache and temp folder.
Exit status 0 when every request came back right and the app survived, else 1.

``--tiny`` runs the tiny random pipeline (``tests/tiny_pipeline.py``: ``make_tiny_pipeline(0)``, as the
tests do); by default the shipped ``checkpoints/neuroimagen-tiny`` when it exists, else the tiny one
(the report says which). Bounded: at most 64 clients x 100 requests, 200 burst requests and
``--timeout`` seconds (default 600) for the whole run.

This tool never imports gradio (``demo.settings`` is Gradio-free): it only uses ``gradio_client``, and runs the app
in a subprocess.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demo.settings import CAPTION_SOURCE, GUIDANCE_SCALE, MAX_STEPS, QUEUE_MAX_SIZE, STRENGTH

from .synthetic import synthetic_trial

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "neuroimagen-tiny"
MAX_CLIENTS, MAX_REQUESTS, MAX_BURST = 64, 100, 200
START_TIMEOUT_S = 180
SAMPLE_EVERY_S = 0.05
CORPUS_PEAK_MB, CORPUS_AFTER_MB = 1536, 100  # issue 19's budget for the bad-input corpus
GENERIC_ERROR = "has not enabled verbose error reporting"  # what users see when an exception is not explained


# ------------------------------------------------------------------------------------------------ the app
@dataclass
class App:
    url: str
    pid: int | None
    proc: subprocess.Popen | None = None
    startup_s: float | None = None
    gradio_dir: Path | None = None  # GRADIO_TEMP_DIR of an app we started
    tmp_dir: Path | None = None  # its TMPDIR
    log: Path | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """Ctrl-C ``proc`` (Gradio shuts down cleanly on SIGINT), then kill it if it is still running after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> str:
    """``url`` if it points at this machine (127.0.0.0/8, ::1 or localhost), else ValueError."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise ValueError(f"Refusing to load-test {url!r}: expected an http URL on this machine (127.0.0.1, ::1 "
                         f"or localhost). The load test only runs against loopback.")
    return url if url.endswith("/") else url + "/"


def _pid_listening_on(port: int) -> int | None:
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except Exception:  # noqa: BLE001 - no permission to list sockets: memory is then not reported
        return None
    return None


def wait_until_serving(url: str, proc: subprocess.Popen, log_path: Path, t0: float, stop,
                       timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200; on the process's exit or after ``timeout`` s from ``t0``, call
    ``stop`` and raise ``RuntimeError`` with the tail of the app's log."""
    while True:
        if proc.poll() is not None:
            stop()
            raise RuntimeError(f"app.py exited with code {proc.returncode} before serving:\n"
                               f"{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            stop()
            raise RuntimeError(f"app.py did not serve within {timeout} s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)


def app_env(gradio_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """The environment of an app started for a measurement or a test: loopback only, no analytics, no share
    link, its own Gradio cache (``gradio_dir``) and temp folder (``tmp_dir``), unbuffered output."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_TEMP_DIR": str(gradio_dir), "TMPDIR": str(tmp_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("GRADIO_SHARE", None)
    return env


def start_app(checkpoint: Path, work: Path, log=sys.stderr) -> App:
    """``python app.py --checkpoint DIR`` on a free loopback port, with its own Gradio and temp folders."""
    if not APP.is_file():
        raise FileNotFoundError(f"No app at {APP}: run from a checkout of the project, or pass --url of a running "
                                f"app.")
    gradio_dir, tmp_dir = work / "gradio", work / "tmp"
    gradio_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = app_env(gradio_dir, tmp_dir)
    log_path = work / "app.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(APP), "--checkpoint", str(checkpoint), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    app = App(url=f"http://127.0.0.1:{port}/", pid=proc.pid, proc=proc, gradio_dir=gradio_dir, tmp_dir=tmp_dir,
              log=log_path)
    print(f"[loadtest] starting app.py on {app.url} (checkpoint {checkpoint})", file=log)
    wait_until_serving(app.url, proc, log_path, t0, app.stop)
    app.startup_s = round(time.perf_counter() - t0, 2)
    return app


# ------------------------------------------------------------------------------------------------ memory
class MemorySampler:
    """Samples the resident memory (RSS) of a process plus all its children in a background thread."""

    def __init__(self, pid: int | None, every: float = SAMPLE_EVERY_S):
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float | None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self.max_processes = max(self.max_processes, len(procs))
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss_mb()
            if rss is not None:
                self.samples.append(rss)
            self._stop.wait(self.every)

    def __enter__(self):
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def report(self) -> dict:
        if not self.samples:
            return {"peak_rss_mb": None, "note": "the app's process is unknown (pass --pid) or not readable"}
        hwm = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
            hwm = round(float(next(ln for ln in status if ln.startswith("VmHWM")).split()[1]) / 1024, 1)
        return {"peak_rss_mb": round(max(self.samples), 1), "start_rss_mb": round(self.samples[0], 1),
                "end_rss_mb": round(self.samples[-1], 1), "samples": len(self.samples),
                "sampled_every_s": self.every, "processes": self.max_processes, "main_process_vmhwm_mb": hwm}


# ------------------------------------------------------------------------------------------------ trials
def write_trials(n: int, out: Path) -> list[Path]:
    """``n`` different synthetic trials (model montage, 1 kHz, 500 samples, volts) as ``.npz`` files."""
    from neuroimagen.data import write_trial

    paths = []
    for k in range(n):
        rng = np.random.default_rng([2024, k])
        trial = synthetic_trial(rng, frequency=rng.uniform(6, 12), latency=rng.uniform(0.1, 0.3))
        paths.append(write_trial(trial, out / f"loadtest_trial{k}.npz"))
    return paths


@dataclass
class Reference:
    """Direct pipeline calls with the app's settings, cached by (trial, seed, steps).

    They run as the app runs its handler: in a worker thread, with torch's default number of threads. The
    thread count changes the order of float sums, hence a pixel here and there; and on busy cores two OpenMP
    threads driven from the main thread made a tiny pipeline call 100 times slower here than from a worker.
    """

    pipe: object
    strength: float = STRENGTH
    guidance_scale: float = GUIDANCE_SCALE
    _trials: dict = field(default_factory=dict)
    _images: dict = field(default_factory=dict)
    _worker: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reference"))

    def image(self, path: Path, seed: int, steps: int) -> np.ndarray:
        return self._worker.submit(self._image, path, seed, steps).result()

    def _image(self, path: Path, seed: int, steps: int) -> np.ndarray:
        import torch

        from neuroimagen.data import preprocess, read_trial

        key = (str(path), seed, steps)
        if key not in self._images:
            if str(path) not in self._trials:
                self._trials[str(path)] = preprocess(read_trial(path))
            out = self.pipe(self._trials[str(path)], generator=torch.Generator().manual_seed(seed), mode="both",
                            strength=self.strength, guidance_scale=self.guidance_scale, num_inference_steps=steps,
                            caption_source=CAPTION_SOURCE, output_type="pil")
            self._images[key] = np.asarray(out.images[0].convert("RGB"))
        return self._images[key]


def load_pipeline(checkpoint: Path | None):
    """The pipeline the app runs: from ``checkpoint``, or the tiny random one (``None``)."""
    from neuroimagen.pipelines.pipeline_neuroimagen import NeuroImagenPipeline
    from tests.tiny_pipeline import make_tiny_pipeline

    pipe = make_tiny_pipeline(seed=0) if checkpoint is None else NeuroImagenPipeline.from_pretrained(checkpoint)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------ requests
@dataclass
class Outcome:
    client: int
    index: int
    seed: int
    steps: int
    trial: Path
    status: str = "pending"  # ok | mismatched | corrupt | queue_full | app_error | timeout | error
    latency_s: float | None = None
    detail: str | None = None
    image: Path | None = None
    ablation: bool = False  # the blocker of the burst: three pipeline calls in one request
    strength: float | None = None


def _classify(err: BaseException) -> str:
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    if isinstance(err, QueueError):
        return "queue_full"
    if isinstance(err, AppError):
        return "app_error"
    if isinstance(err, TimeoutError | concurrent.futures.TimeoutError):
        return "timeout"
    return "error"


def _submit(client, o: Outcome, strength: float, guidance: float):
    from gradio_client import handle_file

    return client.submit(source="upload", files=[handle_file(str(o.trial))],
                         strength=strength if o.strength is None else o.strength, guidance_scale=guidance,
                         num_inference_steps=o.steps, seed=o.seed, randomize_seed=False, caption_source=CAPTION_SOURCE,
                         ablation=o.ablation, api_name="/reconstruct")


def _wait(job, o: Outcome, t0: float, deadline: float) -> None:
    try:
        result = job.result(timeout=max(0.1, deadline - time.perf_counter()))
        o.image, o.status = Path(result[0]), "done"
    except Exception as err:  # noqa: BLE001 - every failure is counted, none stops the run
        o.status, o.detail = _classify(err), f"{type(err).__name__}: {str(err)[:300]}"
        if o.status == "timeout":
            with contextlib.suppress(Exception):
                job.cancel()
    o.latency_s = time.perf_counter() - t0


def _check(o: Outcome, ref: Reference) -> None:
    """Compare a returned reconstruction with the direct pipeline call (same trial, seed and steps)."""
    if o.status != "done":
        return
    from PIL import Image

    try:
        with Image.open(o.image) as im:
            got = np.asarray(im.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - e.g. an empty or truncated download
        size = o.image.stat().st_size if o.image.is_file() else None
        o.status, o.detail = "corrupt", f"the returned image ({size} bytes) does not open: {type(err).__name__}"
        return
    want = ref.image(o.trial, o.seed, o.steps)
    if got.shape == want.shape and np.array_equal(got, want):
        o.status = "ok"
    else:
        diff = (np.abs(got.astype(int) - want.astype(int)).max() if got.shape == want.shape else "shape")
        o.status, o.detail = "mismatched", f"got {got.shape}, expected {want.shape}; max pixel difference {diff}"


def _client(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads))


def run_load(url: str, trials: list[Path], n_requests: int, steps: int, seed: int, deadline: float,
             work: Path, strength: float, guidance: float) -> tuple[list[Outcome], float]:
    """Every client (one thread, one gradio_client session) sends its requests one after the other."""
    outcomes = [[Outcome(c, r, seed + 1000 * c + r, steps, trials[c]) for r in range(n_requests)]
                for c in range(len(trials))]
    barrier = threading.Barrier(len(trials))

    def client_thread(c: int) -> None:
        try:
            client = _client(url, work / "downloads" / f"client{c}")
        except Exception as err:  # noqa: BLE001
            for o in outcomes[c]:
                o.status, o.detail = "error", f"could not connect: {type(err).__name__}: {err}"
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=1)
            return
        try:
            barrier.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except threading.BrokenBarrierError:
            pass
        try:
            for o in outcomes[c]:
                if time.perf_counter() > deadline:
                    o.status, o.detail = "timeout", "not sent: the run's time limit was reached"
                    continue
                t0 = time.perf_counter()
                try:
                    job = _submit(client, o, strength, guidance)
                except Exception as err:  # noqa: BLE001 (e.g. the upload refused)
                    o.status, o.detail, o.latency_s = _classify(err), f"{type(err).__name__}: {err}", 0.0
                    continue
                _wait(job, o, t0, deadline)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_thread, args=(c,), daemon=True) for c in range(len(trials))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.perf_counter() + 30))
    return [o for per_client in outcomes for o in per_client], time.perf_counter() - t0


def run_burst(url: str, trial: Path, n_burst: int, steps: int, seed: int, deadline: float, work: Path,
              ref: Reference, strength: float, guidance: float) -> dict:
    """One long request holds the pipeline; meanwhile ``n_burst`` identical requests arrive at once.

    The long request is the slowest the app allows: 50 steps at strength 1 with the ablation (three
    pipeline calls), so the burst lands in the queue while the pipeline is busy.
    """
    from gradio_client.utils import Status

    client = _client(url, work / "downloads" / "burst")
    try:
        blocker_steps = MAX_STEPS
        blocker = Outcome(-1, -1, seed, blocker_steps, trial, ablation=True, strength=1.0)
        t_block = time.perf_counter()
        job = _submit(client, blocker, strength, guidance)
        while job.status().code not in (Status.PROCESSING, Status.PROGRESS, Status.FINISHED) and not job.done():
            if time.perf_counter() > min(deadline, t_block + 60):
                break
            time.sleep(0.01)
        burst = [Outcome(-1, k, seed + 1, steps, trial) for k in range(n_burst)]
        t0 = time.perf_counter()
        jobs = [(o, _submit(client, o, strength, guidance)) for o in burst]
        submit_s = time.perf_counter() - t0
        waiters = [threading.Thread(target=_wait, args=(j, o, t0, deadline), daemon=True) for o, j in jobs]
        for w in waiters:
            w.start()
        _wait(job, blocker, t_block, deadline)
        for w in waiters:
            w.join(timeout=max(1.0, deadline - time.perf_counter() + 30))
        for o in burst:
            _check(o, ref)
        counts = _counts(burst)
        # The blocker's own image is not recomputed here (it would cost as much again): it only has to arrive.
        return {"submitted": n_burst, "queue_max_size": QUEUE_MAX_SIZE, "blocker_steps": blocker_steps,
                "blocker_status": "ok" if blocker.status == "done" else blocker.status,
                "submit_s": round(submit_s, 3), **counts,
                "queue_full_message": next((o.detail for o in burst if o.status == "queue_full"), None),
                "other_errors": [o.detail for o in burst if o.status not in ("ok", "queue_full")][:5],
                "note": None if counts["queue_full"] else "the queue never filled: every burst request was "
                                                          "accepted (a faster app, or a smaller --burst)"}
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _counts(outcomes: list[Outcome]) -> dict:
    statuses = [o.status for o in outcomes]
    return {k: statuses.count(k) for k in ("ok", "mismatched", "corrupt", "queue_full", "app_error", "timeout",
                                            "error")}


def _latency(outcomes: list[Outcome]) -> dict:
    lat = np.array([o.latency_s for o in outcomes if o.status in ("ok", "mismatched")], dtype=float)
    if not lat.size:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    return {"p50": round(float(np.percentile(lat, 50)), 3), "p95": round(float(np.percentile(lat, 95)), 3),
            "mean": round(float(lat.mean()), 3), "max": round(float(lat.max()), 3)}


def _files(root: Path | None) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root is not None and root.is_dir() else []


def _file_report(app: App, before: dict) -> dict:
    """What the requests left behind in the app's Gradio cache and temp folder (an app we started)."""
    if app.gradio_dir is None:
        return {"note": "not counted: the app was not started by the load test (its folders are unknown)"}
    cache, tmp = _files(app.gradio_dir), _files(app.tmp_dir)
    new = [p for p in cache if p not in before["gradio"]]
    stray = [p for p in new if p.parent == app.gradio_dir and p.stat().st_size == 0]  # never-written temp files
    return {"gradio_cache_before": len(before["gradio"]), "gradio_cache_after": len(cache),
            "gradio_cache_new": len(new), "gradio_cache_new_mb": round(sum(p.stat().st_size for p in new) / 2**20, 2),
            "stray_empty_temp_files": len(stray), "app_tmpdir_files_before": len(before["tmp"]),
            "app_tmpdir_files_after": len(tmp),
            "note": "uploads and returned images stay in Gradio's cache (they are downloaded after the request) "
                    "until delete_cache removes them (files older than 1 h, checked every 30 min)"}


# ------------------------------------------------------------------------------------------------ corpus
def _settled_rss(memory: MemorySampler, seconds: float = 3.0) -> float | None:
    """The median RSS over ``seconds`` (the app idle meanwhile)."""
    values = []
    for _ in range(max(1, int(seconds / 0.25))):
        rss = memory.rss_mb()
        if rss is not None:
            values.append(rss)
        time.sleep(0.25)
    return round(float(np.median(values)), 1) if values else None


def run_corpus(url: str, corpus: Path, memory: MemorySampler, example_trial: Path, steps: int, deadline: float,
               work: Path) -> dict:
    """Every corpus file through ``/show_upload`` and ``/reconstruct``; memory before, during and after."""
    from gradio_client import handle_file

    manifest = json.loads((corpus / "manifest.json").read_text())
    client = _client(url, work / "downloads" / "corpus")
    warm = Outcome(0, 0, 0, steps, example_trial)
    _wait(_submit(client, warm, STRENGTH, GUIDANCE_SCALE), warm, time.perf_counter(), deadline)
    idle = _settled_rss(memory)
    first = len(memory.samples)
    unexplained, accepted, refused = [], 0, 0
    for name in sorted(manifest):
        if time.perf_counter() > deadline:
            break
        upload = [handle_file(str(corpus / name))]
        for api, kwargs in (("/show_upload", {"time_ms": 170}),
                            ("/reconstruct", {"source": "upload", "num_inference_steps": steps, "seed": 1})):
            try:
                client.predict(files=upload, api_name=api, **kwargs)
                accepted += 1
            except Exception as err:  # noqa: BLE001 - each refusal is classified, none stops the run
                refused += 1
                if GENERIC_ERROR in str(err) or "Traceback" in str(err):
                    unexplained.append(f"{name} {api}: {str(err)[:200]}")
    peak = round(max(memory.samples[first:], default=0.0), 1)
    after = _settled_rss(memory)
    client.close()
    ok = (not unexplained and peak <= CORPUS_PEAK_MB and idle is not None and after is not None
          and after - idle <= CORPUS_AFTER_MB)
    return {"files": len(manifest), "requests": accepted + refused, "accepted": accepted, "refused": refused,
            "unexplained": unexplained, "idle_rss_mb": idle, "peak_rss_mb": peak, "after_rss_mb": after,
            "after_minus_idle_mb": None if idle is None or after is None else round(after - idle, 1),
            "budget": {"peak_rss_mb": CORPUS_PEAK_MB, "after_minus_idle_mb": CORPUS_AFTER_MB}, "ok": ok}


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadtest", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tiny", action="store_true", help="the tiny random pipeline (make_tiny_pipeline(0))")
    which.add_argument("--checkpoint", default=None, help=f"checkpoint folder (default: {DEFAULT_CHECKPOINT} "
                                                          f"when present, else the tiny random pipeline)")
    p.add_argument("--url", default=None, help="a running app on this machine (default: start app.py)")
    p.add_argument("--pid", type=int, default=None, help="with --url: the app's process id, for its memory")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--requests", type=int, default=5, help="requests per client (default: %(default)s)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps per request, at most 50 as in the app "
                                                         "(default: %(default)s)")
    p.add_argument("--burst", type=int, default=QUEUE_MAX_SIZE + 8,
                   help="requests sent at once after the load, to overflow the queue (default: %(default)s; 0: "
                        "skip)")
    p.add_argument("--corpus", default=None, help="a bad-input corpus folder with manifest.json (e.g. "
                                                   "tests/data/bad): run it first and report memory")
    p.add_argument("--seed", type=int, default=0, help="first seed (client c, request r: seed + 1000 c + r)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    args = p.parse_args(argv)
    for name, low, high in (("clients", 1, MAX_CLIENTS), ("requests", 1, MAX_REQUESTS), ("burst", 0, MAX_BURST),
                            ("steps", 1, MAX_STEPS), ("timeout", 1, 3600)):
        if not low <= getattr(args, name) <= high:
            p.error(f"--{name} must be in [{low}, {high}], got {getattr(args, name)}")
    if args.corpus is not None and not (Path(args.corpus) / "manifest.json").is_file():
        p.error(f"--corpus must be a folder with a manifest.json, got {args.corpus}")
    if args.url is not None:
        try:
            args.url = check_loopback(args.url)
        except ValueError as err:
            p.error(str(err))
    return args


def _pipeline_choice(args) -> tuple[Path | None, str]:
    if args.checkpoint:
        path = Path(args.checkpoint)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"No checkpoint at {path} (no model_index.json).")
        return path, str(path)
    if not args.tiny and (DEFAULT_CHECKPOINT / "model_index.json").is_file():
        return DEFAULT_CHECKPOINT, str(DEFAULT_CHECKPOINT)
    note = "" if args.tiny else f" ({DEFAULT_CHECKPOINT} not found)"
    return None, f"tiny random pipeline, make_tiny_pipeline(seed=0){note}"


@contextlib.contextmanager
def _client_tempdir(path: Path):
    """gradio_client leaves an empty folder in tempfile.gettempdir() per downloaded file: keep them in ``path``."""
    old = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = old


def run(args: argparse.Namespace, log=sys.stderr) -> dict:
    """Run the load test described by ``args`` (see :func:`parse_args`); return the report."""
    t_start = time.perf_counter()
    deadline = t_start + args.timeout
    checkpoint, pipeline_name = _pipeline_choice(args)
    with tempfile.TemporaryDirectory(prefix="neuroimagen-loadtest-") as tmp:
        work = Path(tmp)
        (work / "client-tmp").mkdir()
        app = None
        try:
            if args.url is None:
                app_checkpoint = checkpoint
                if app_checkpoint is None:
                    app_checkpoint = work / "tiny"
                    load_pipeline(None).save_pretrained(app_checkpoint)
                app = start_app(app_checkpoint, work / "app", log=log)
                pipe = load_pipeline(app_checkpoint)  # exactly what the app loaded
            else:
                port = urllib.parse.urlsplit(args.url).port or 80
                app = App(url=args.url, pid=args.pid or _pid_listening_on(port))
                pipe = load_pipeline(checkpoint)
            ref = Reference(pipe)
            trials = write_trials(args.clients, work / "trials")
            ref.image(trials[0], args.seed, args.steps)  # warm up this process
            phases = {"setup": round(time.perf_counter() - t_start, 1)}
            before = {"gradio": set(_files(app.gradio_dir)), "tmp": set(_files(app.tmp_dir))}
            with _client_tempdir(work / "client-tmp"), MemorySampler(app.pid) as memory:
                corpus = None
                if args.corpus:
                    print(f"[loadtest] corpus: every file of {args.corpus} through /show_upload and /reconstruct",
                          file=log)
                    corpus = run_corpus(app.url, Path(args.corpus), memory, trials[0], args.steps, deadline, work)
                    phases["corpus"] = round(time.perf_counter() - t_start - sum(phases.values()), 1)
                print(f"[loadtest] load: {args.clients} clients x {args.requests} requests, {args.steps} steps",
                      file=log)
                outcomes, wall = run_load(app.url, trials, args.requests, args.steps, args.seed, deadline, work,
                                          ref.strength, ref.guidance_scale)
                load_memory = memory.report()
                phases["load"] = round(wall, 1)
                burst = None
                if args.burst:
                    print(f"[loadtest] burst: {args.burst} requests at once (queue holds {QUEUE_MAX_SIZE})",
                          file=log)
                    burst = run_burst(app.url, trials[0], args.burst, args.steps, args.seed + 999_999, deadline,
                                      work, ref, ref.strength, ref.guidance_scale)
                    after = Outcome(0, 0, args.seed + 7, args.steps, trials[-1])
                    client = _client(app.url, work / "downloads" / "after")
                    _wait(_submit(client, after, ref.strength, ref.guidance_scale), after, time.perf_counter(),
                          deadline)
                    client.close()
                    _check(after, ref)
                    burst["app_alive_after"] = app.alive()
                    burst["next_request"] = after.status
                    phases["burst"] = round(time.perf_counter() - t_start - sum(phases.values()), 1)
                memory_report = memory.report()
            print("[loadtest] checking every result against the pipeline called directly", file=log)
            for o in outcomes:
                if o.status == "done" and time.perf_counter() > deadline:
                    o.status, o.detail = "timeout", "not checked: the run's time limit was reached"
                _check(o, ref)
            counts = _counts(outcomes)
            n = len(outcomes)
            phases["check"] = round(time.perf_counter() - t_start - sum(phases.values()), 1)
            report = {
                "app": {"url": app.url, "started_by_loadtest": app.proc is not None, "startup_s": app.startup_s,
                        "pid": app.pid, "pipeline": pipeline_name},
                "settings": {"clients": args.clients, "requests_per_client": args.requests, "steps": args.steps,
                             "strength": ref.strength, "guidance_scale": ref.guidance_scale, "burst": args.burst,
                             "timeout_s": args.timeout},
                "load": {"requests": n, **counts, "success_rate": round(counts["ok"] / n, 4),
                         "latency_s": _latency(outcomes), "wall_s": round(wall, 2),
                         "throughput_rps": round(counts["ok"] / wall, 2) if wall > 0 else None,
                         "failures": [f"client {o.client} request {o.index} (seed {o.seed}): {o.status}: {o.detail}"
                                      for o in outcomes if o.status != "ok"][:10],
                         "peak_rss_mb": load_memory.get("peak_rss_mb")},
                "burst": burst,
                "corpus": corpus,
                "memory": memory_report,
                "files": _file_report(app, before),
                "app_alive": app.alive(),
                "seconds": {**phases, "total": round(time.perf_counter() - t_start, 1)},
            }
            burst_ok = burst is None or (burst["ok"] + burst["queue_full"] == burst["submitted"]
                                         and burst["blocker_status"] == "ok" and burst["next_request"] == "ok"
                                         and burst["app_alive_after"])
            report["ok"] = bool(counts["ok"] == n and report["app_alive"] and burst_ok
                                and (corpus is None or corpus["ok"]))
            return report
        finally:
            if app is not None:
                app.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
