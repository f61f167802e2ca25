"""Reliability and safety of the app under bad input and load (docs/RELIABILITY.md).

Against the one shared ``python app.py`` of the session (``tests/app_server.py``), through its API:

- every file of the bad-input corpus (``tests/data/bad``, its manifest) uploaded to ``/reconstruct``
  gets its specific message (or, for the accepted ones, a reconstruction), and the next good request
  is answered; a pickle that would run code is refused and its code never runs in the app;
- the upload limits (file size, channels, length, sampling rate) are enforced with clear messages;
- same trial + seed + settings give the same image bytes, through the API and the library;
- requests leave no stray files in the app's Gradio cache and temp folder;
- a small ``benchmarks.loadtest`` run: concurrent clients all get their own right image, a burst
  beyond the queue's size is refused as "queue full" and the app keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from app_server import app_server  # noqa: F401 (the shared server fixture)
from conftest import load_script, write_exploit
from PIL import Image

from neuroimagen.data import EEGTrial, write_trial

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

BAD_DIR = Path(__file__).parent / "data" / "bad"
MANIFEST = json.loads((BAD_DIR / "manifest.json").read_text())
GENERIC_ERROR = "has not enabled verbose error reporting"  # what users see when an exception is not explained
INVALID_TYPE = "Invalid file type. Please upload a file that is one of these formats"
# Through the app a few files are stopped before read_trial, by a check that says as much:
API_MESSAGES = {
    "notes.txt": INVALID_TYPE,  # the upload widget's own file-type check (lists the accepted extensions)
    "table.csv": INVALID_TYPE,
    "trial": INVALID_TYPE,
}
FAST = dict(num_inference_steps=2)  # one img2img step at the default strength: these tests are about plumbing


@pytest.fixture(scope="module", autouse=True)
def _client_temp_in_tmp_path(tmp_path_factory):
    """gradio_client leaves an empty folder in tempfile.gettempdir() per downloaded file: not in /tmp."""
    import tempfile

    old, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("client-tmp"))
    yield
    tempfile.tempdir = old


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):  # noqa: F811
    return Client(app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("reliability-dl")))


@pytest.fixture(scope="module")
def example(app_server):  # noqa: F811
    """(name, npz path) of the first example trial the app offers."""
    index = app_server.examples / "index.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        entries = entries.get("examples", entries) if isinstance(entries, dict) else entries
        e = next(e for e in entries if e["file"].endswith(".npz"))
        return Path(e["file"]).stem, app_server.examples / e["file"]
    path = sorted(app_server.examples.glob("*.npz"))[0]
    return path.stem, path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _reconstruct(client, **kwargs):
    return client.predict(api_name="/reconstruct", **{**FAST, **kwargs})


def _assert_serves_a_good_request(client, example, app_server, seed: int = 0):  # noqa: F811
    assert app_server.alive(), "the app process died"
    out = _reconstruct(client, source="example", example=example[0], seed=seed)
    px = _pixels(out[0])
    assert px.shape[0] >= 16 and px.std() > 2.0, "the next good request did not get a real image"
    assert out[4] == seed


def _assert_clear(err: AppError, app_server, expected: str) -> None:  # noqa: F811
    text = str(err)
    assert GENERIC_ERROR not in text, f"a generic error instead of an explanation: {text}"
    assert expected in text, f"expected {expected!r} in the message, got {text!r}"
    for secret in (str(app_server.gradio_dir), str(app_server.tmp_dir), "Traceback"):
        assert secret not in text, f"the message shows {secret!r}: {text}"


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bad_input_corpus_in_the_library(name):
    """Each corpus file read and preprocessed by the library: the model input, or a ValueError with its own
    message that shows no server path (the other half of the pair: ``..._through_the_app``)."""
    from neuroimagen.data import preprocess, read_trial

    expect = MANIFEST[name]
    if expect["ok"]:
        out = preprocess(read_trial(BAD_DIR / name))
        assert out.data.shape == (128, 440) and out.info["preprocessed"]
        assert expect["info"] in repr(out.info)
    else:
        with pytest.raises(ValueError) as err:
            preprocess(read_trial(BAD_DIR / name))
        assert expect["message"] in str(err.value)
        assert "Traceback" not in str(err.value) and str(BAD_DIR) not in str(err.value)  # no server paths leak


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bad_input_corpus_through_the_app(client, example, app_server, name):  # noqa: F811
    """Each corpus file uploaded to /reconstruct: its own message (or an image), then a good request works."""
    expect = MANIFEST[name]
    if expect["ok"]:
        out = _reconstruct(client, source="upload", files=[handle_file(str(BAD_DIR / name))], seed=1)
        assert _pixels(out[0]).shape[0] >= 16 and out[2].startswith("an image of")
    else:
        with pytest.raises(AppError) as err:
            _reconstruct(client, source="upload", files=[handle_file(str(BAD_DIR / name))], seed=1)
        _assert_clear(err.value, app_server, API_MESSAGES.get(name, expect["message"]))
        if name in API_MESSAGES and API_MESSAGES[name] == INVALID_TYPE:
            assert ".npz" in str(err.value) and ".vhdr" in str(err.value)  # says what is accepted
    _assert_serves_a_good_request(client, example, app_server, seed=len(name))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_pickle_with_code_is_refused_and_never_runs_in_the_app(client, example, app_server, tmp_path,  # noqa: F811
                                                                 legacy):
    marker = tmp_path / "pwned.txt"  # an absolute path: the app process would create it if the code ran
    path = write_exploit(tmp_path / "evil.pth", marker, legacy, sfreq=1000.0)
    with pytest.raises(AppError) as err:
        _reconstruct(client, source="upload", files=[handle_file(str(path))])
    _assert_clear(err.value, app_server, "'evil.pth'")
    assert "could run code" in str(err.value) or "safe loader" in str(err.value)
    with pytest.raises(AppError):
        client.predict(files=[handle_file(str(path))], time_ms=170, api_name="/show_upload")  # the other entry
    assert not marker.exists(), "the pickle's code ran in the app"
    _assert_serves_a_good_request(client, example, app_server, seed=3)


# ---------------------------------------------------------------------------------------------- files a header names
def _reads_leave_atime(path: Path) -> bool:
    """Whether reading ``path`` moves its access time on this file system (relatime, strictatime), so that a
    read by the app process can be seen from here; the access time is set back into the past either way."""
    os.utime(path, (946684800, path.stat().st_mtime))  # atime 2000-01-01, before mtime: relatime updates it
    path.read_bytes()
    moved = path.stat().st_atime > 946684800
    os.utime(path, (946684800, path.stat().st_mtime))
    return moved


@pytest.mark.parametrize("data_line", ["datafile={sentinel}", "DATAFILE=../outside/sentinel.eeg"])
def test_a_header_never_makes_the_app_read_a_file_that_was_not_uploaded(client, example, app_server, tmp_path,  # noqa: F811
                                                                        data_line):
    """A BrainVision header whose DataFile names a file outside the uploads, in a case and section MNE reads
    and the old check did not; the file WOULD decode fine. The app must refuse it, naming the reference, and
    never open it (its access time stays put where the file system records reads)."""
    vhdr_text = load_script("make_bad_inputs").vhdr_text
    outside = tmp_path / "outside"
    outside.mkdir()
    write_trial(EEGTrial(1e-5 * np.ones((1, 500)), 1000.0, ["Cz"]), outside / "sentinel.vhdr")
    sentinel = outside / "sentinel.eeg"
    watch = _reads_leave_atime(sentinel)
    up = tmp_path / "up"
    up.mkdir()
    (up / "rec.vhdr").write_text(vhdr_text(data_line.format(sentinel=sentinel), "MarkerFile=rec.vmrk",
                                           comment="DataFile=rec.eeg"))
    (up / "rec.eeg").write_bytes(np.zeros(500, np.float32).tobytes())
    (up / "rec.vmrk").write_text("Brain Vision Data Exchange Marker File, Version 1.0\n[Marker Infos]\n")
    files = [handle_file(str(up / n)) for n in ("rec.vhdr", "rec.eeg", "rec.vmrk")]
    for api, kwargs in (("/reconstruct", {**FAST, "source": "upload"}), ("/show_upload", {"time_ms": 170})):
        with pytest.raises(AppError) as err:
            client.predict(files=files, api_name=api, **kwargs)
        _assert_clear(err.value, app_server, "'rec.vhdr' names DataFile=")
        assert "expected the bare name of a file given with it" in str(err.value)
    if watch:
        assert sentinel.stat().st_atime == 946684800, "the app read the file the header named"
    _assert_serves_a_good_request(client, example, app_server, seed=5)


# ---------------------------------------------------------------------------------------------- limits
def _trial_file(path: Path, n_chans: int = 128, n_times: int = 500, sfreq: float = 1000.0) -> Path:
    from neuroimagen.data.montage import model_ch_names

    names = list(model_ch_names()) + [f"X{k}" for k in range(max(0, n_chans - 128))]
    data = np.zeros((n_chans, n_times), np.float32)  # refused on its shape: the values do not matter
    np.savez_compressed(path, data=data, sfreq=sfreq, ch_names=np.array(names[:n_chans]))
    return path


def test_upload_limits_are_enforced_with_clear_messages(client, example, app_server, tmp_path):  # noqa: F811
    from demo.settings import MAX_UPLOAD_BYTES
    from demo.ui import LAUNCH_KWARGS
    from neuroimagen.data.preprocessing import MAX_CHANNELS, MAX_TRIAL_SECONDS

    assert LAUNCH_KWARGS["max_file_size"] == MAX_UPLOAD_BYTES == client.config["max_file_size"] == 10 * 2**20
    cases = {
        # 11 s at 1 kHz: one trial is 0.46 s
        "long.npz": (_trial_file(tmp_path / "long.npz", n_times=int(1000 * (MAX_TRIAL_SECONDS + 1))),
                     f"'long.npz' is 11.0 s long (11000 samples at 1000 Hz): expected one trial of at most "
                     f"{MAX_TRIAL_SECONDS:g} s"),
        # without the limit this file asks the resampler for 128 x 1,000,000 samples
        "slow.npz": (_trial_file(tmp_path / "slow.npz", sfreq=0.5),
                     "'slow.npz' is sampled at 0.5 Hz: expected 100 to 20000 Hz"),
        "wide.npz": (_trial_file(tmp_path / "wide.npz", n_chans=MAX_CHANNELS + 88),
                     f"'wide.npz' has 600 channels: at most {MAX_CHANNELS}"),
    }
    for path, message in cases.values():
        with pytest.raises(AppError) as err:
            _reconstruct(client, source="upload", files=[handle_file(str(path))])
        _assert_clear(err.value, app_server, message)

    # A file over the size limit is refused while it streams in, by the server itself (the client checks too).
    big = tmp_path / "big.npz"
    big.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 1))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _reconstruct(client, source="upload", files=[handle_file(str(big))])
    boundary = "neuroimagenboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.npz\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(app_server.url + "gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 413 and "maximum allowed size" in http.value.read().decode()
    _assert_serves_a_good_request(client, example, app_server, seed=4)


def test_limits_check_before_preprocessing():
    from neuroimagen.data.preprocessing import MAX_CHANNELS, check_trial_limits

    names = [f"E{k}" for k in range(MAX_CHANNELS)]
    check_trial_limits(EEGTrial(np.zeros((MAX_CHANNELS, 10_000)), 1000.0, names))  # at the limits: accepted
    check_trial_limits(EEGTrial(np.zeros((128, 44)), 100.0, names[:128]))
    for trial, message in (
        (EEGTrial(np.zeros((MAX_CHANNELS + 1, 500)), 1000.0, names + ["X"]), "The trial has 513 channels"),
        (EEGTrial(np.zeros((128, 10_001)), 1000.0, names[:128]), "The trial is 10.0 s long (10001 samples"),
        (EEGTrial(np.zeros((128, 500)), 99.0, names[:128]), "The trial is sampled at 99 Hz"),
        (EEGTrial(np.zeros((128, 500)), 20_001.0, names[:128]), "The trial is sampled at 20001 Hz"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            check_trial_limits(trial)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_trial_seed_and_settings_give_the_same_image_bytes(client, example, app_server):  # noqa: F811
    from neuroimagen import NeuroImagenPipeline
    from neuroimagen.data import preprocess, read_trial

    settings = dict(strength=0.6, guidance_scale=4.0, num_inference_steps=5)
    a = _reconstruct(client, source="example", example=example[0], seed=11, **settings)
    b = _reconstruct(client, source="example", example=example[0], seed=11, **settings)
    assert Path(a[0]).read_bytes() == Path(b[0]).read_bytes()  # the PNG the user downloads, byte for byte
    assert Path(a[1]).read_bytes() == Path(b[1]).read_bytes()  # and the saliency map
    other = _reconstruct(client, source="example", example=example[0], seed=12, **settings)
    assert not np.array_equal(_pixels(other[0]), _pixels(a[0]))  # the seed matters

    pipe = NeuroImagenPipeline.from_pretrained(app_server.checkpoint)
    pipe.set_progress_bar_config(disable=True)
    trial = preprocess(read_trial(example[1]))
    kwargs = dict(output_type="pil", **settings)  # the library's defaults, as the app's
    lib = [pipe(trial, generator=torch.Generator().manual_seed(11), **kwargs).images[0] for _ in range(2)]
    assert lib[0].tobytes() == lib[1].tobytes()
    np.testing.assert_array_equal(np.asarray(lib[0].convert("RGB")), _pixels(a[0]))  # library == app


# ---------------------------------------------------------------------------------------------- no stray files
def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_requests_leave_no_stray_files(client, example, app_server, tmp_path):  # noqa: F811
    """Uploads, plots, errors and reconstructions: nothing lands in the app's temp folder, and the Gradio cache
    only gains the uploaded files and the returned images (which ``delete_cache`` removes after an hour)."""
    from demo.settings import DELETE_CACHE

    frequency, age = DELETE_CACHE
    assert frequency <= age <= 3600  # outputs are deleted within 1-1.5 h of their request

    trials = []
    for k in range(2):
        rng = np.random.default_rng(k)
        from neuroimagen.data.montage import model_ch_names

        data = 1e-5 * rng.standard_normal((128, 500))
        trials.append(write_trial(EEGTrial(data, 1000.0, list(model_ch_names())), tmp_path / f"stray{k}.npz"))
    bad = BAD_DIR / "nan.npz"
    client.predict(files=[handle_file(str(trials[0]))], time_ms=170, api_name="/show_upload")  # warm the paths
    gradio_before, tmp_before = _files(app_server.gradio_dir), _files(app_server.tmp_dir)

    returned = []
    n_requests = 0
    for k, path in enumerate(trials):
        views = client.predict(files=[handle_file(str(path))], time_ms=100 + 50 * k, api_name="/show_upload")
        out = _reconstruct(client, source="upload", files=[handle_file(str(path))], seed=100 + k)
        returned += [views[2], views[3], out[0], out[1]]
        with pytest.raises(AppError):
            _reconstruct(client, source="upload", files=[handle_file(str(bad))])
        n_requests += 3

    new = _files(app_server.gradio_dir) - gradio_before
    assert _files(app_server.tmp_dir) == tmp_before, "requests left files in the app's temp folder"
    empty = sorted(p.name for p in new if p.stat().st_size == 0)
    assert not empty, f"{len(empty)} empty temporary files left in the Gradio cache by {n_requests} requests"
    uploads = {p.name for p in trials} | {bad.name}
    outputs = {Path(r).name for r in returned}  # image.png (Gradio names each by its content's hash)
    unexpected = sorted(str(p.relative_to(app_server.gradio_dir)) for p in new
                        if p.name not in uploads and p.name not in outputs)
    assert not unexpected, f"files in the Gradio cache that are neither uploads nor returned images: {unexpected}"
    assert len(new) <= len(uploads) + len(returned)


def test_the_gradio_work_arounds_are_for_the_gradio_pinned():
    """demo/gradio_patches.py replaces Gradio internals written for one version: requirements.txt and the Space's
    front matter (README.md) pin that version, so a new pin makes someone check the work-arounds again."""
    from demo.gradio_patches import GRADIO_VERSION

    root = Path(__file__).resolve().parent.parent
    assert re.findall(r"^gradio==(\S+)", (root / "requirements.txt").read_text(), flags=re.M) == [GRADIO_VERSION]
    assert re.findall(r"^sdk_version: (\S+)", (root / "README.md").read_text(), flags=re.M) == [GRADIO_VERSION]


def test_a_returned_image_is_never_read_half_written(tmp_path):
    """Gradio caches a returned image at <sha256>/image.png and, as shipped, rewrites it in place each time the
    same image is returned again: a client fetching it meanwhile got a truncated (even empty) file. The app
    makes those writes atomic (``write_returned_images_atomically``); readers must only ever see whole files."""
    import threading

    from gradio import processing_utils

    from demo.gradio_patches import write_returned_images_atomically

    write_returned_images_atomically()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    path = Path(processing_utils.save_pil_to_cache(img, str(tmp_path), format="png"))
    size, stop, partial = path.stat().st_size, threading.Event(), []

    def again():  # the same image returned by other requests
        while not stop.is_set():
            assert processing_utils.save_pil_to_cache(img, str(tmp_path), format="png") == str(path)

    writers = [threading.Thread(target=again) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in range(500):
            n = len(path.read_bytes())
            if n != size:
                partial.append(n)
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert not partial, f"{len(partial)} of 500 reads saw a partly written file ({sorted(set(partial))[:5]} bytes)"
    assert [p.name for p in path.parent.iterdir()] == ["image.png"]  # no staging files left


# ---------------------------------------------------------------------------------------------- load
def test_loadtest_small_run(app_server, tmp_path):  # noqa: F811
    """4 clients x 2 requests against the running app, each result checked against the pipeline; then a burst
    beyond the queue: the excess is refused as 'queue full' and the app keeps serving."""
    from benchmarks import loadtest
    from demo.settings import QUEUE_MAX_SIZE

    out = tmp_path / "load.json"
    args = loadtest.parse_args(["--url", app_server.url, "--pid", str(app_server.proc.pid), "--checkpoint",
                                str(app_server.checkpoint), "--clients", "4", "--requests", "2", "--steps", "2",
                                "--burst", str(QUEUE_MAX_SIZE + 3), "--timeout", "240", "--out", str(out)])
    report = loadtest.run(args)
    load, burst = report["load"], report["burst"]
    assert load["requests"] == 8 and load["ok"] == 8 and load["success_rate"] == 1.0, load["failures"]
    assert load["mismatched"] == 0 and load["corrupt"] == 0
    assert 0 < load["latency_s"]["p50"] <= load["latency_s"]["p95"]
    assert report["memory"]["peak_rss_mb"] > 100
    assert burst["queue_full"] >= 1, burst  # more than the queue holds arrived while the pipeline was busy
    assert "Queue is full" in burst["queue_full_message"]
    assert burst["ok"] + burst["queue_full"] == burst["submitted"], burst  # none mismatched or corrupt
    assert burst["app_alive_after"] and burst["next_request"] == "ok"
    assert report["ok"] and app_server.alive()


def test_loadtest_corpus_phase_reports_memory_and_explanations(app_server, tmp_path):  # noqa: F811
    """``--corpus`` sends each file to /show_upload and /reconstruct and reports idle, peak and after RSS:
    here on three files (the int8 bomb that once took the app to 3 GB, a good one, one with a bad label)."""
    import shutil

    from benchmarks import loadtest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = ["int8_bomb.npz", "bare_128.npy", "label_1000.npz"]
    for name in names:
        shutil.copy(BAD_DIR / name, corpus / name)
    (corpus / "manifest.json").write_text(json.dumps({n: MANIFEST[n] for n in names}))
    args = loadtest.parse_args(["--url", app_server.url, "--pid", str(app_server.proc.pid), "--checkpoint",
                                str(app_server.checkpoint), "--clients", "1", "--requests", "1", "--steps", "2",
                                "--burst", "0", "--corpus", str(corpus), "--timeout", "300"])
    report = loadtest.run(args)["corpus"]
    assert report["files"] == 3 and report["requests"] == 6 and report["accepted"] == 2  # bare_128.npy, twice
    assert report["unexplained"] == [], report["unexplained"]
    assert 100 < report["idle_rss_mb"] <= report["peak_rss_mb"] and report["after_rss_mb"] > 100
    assert report["ok"] == (report["peak_rss_mb"] <= loadtest.CORPUS_PEAK_MB
                            and report["after_minus_idle_mb"] <= loadtest.CORPUS_AFTER_MB)


def test_loadtest_detects_a_mixed_up_result(tmp_path):
    from benchmarks import loadtest

    ref = loadtest.Reference(loadtest.load_pipeline(None))
    trial = loadtest.write_trials(1, tmp_path)[0]
    Image.fromarray(ref.image(trial, 1, 2)).save(tmp_path / "seed1.png")
    right = loadtest.Outcome(0, 0, 1, 2, trial, status="done", image=tmp_path / "seed1.png")
    swapped = loadtest.Outcome(0, 1, 2, 2, trial, status="done", image=tmp_path / "seed1.png")  # seed 2's request
    loadtest._check(right, ref)
    loadtest._check(swapped, ref)
    assert right.status == "ok" and swapped.status == "mismatched"


@pytest.mark.parametrize("url", ["http://example.com:7860/", "http://10.0.0.5:7860/", "file:///etc/passwd"])
def test_loadtest_refuses_anything_but_loopback(url):
    from benchmarks import loadtest

    with pytest.raises(ValueError, match="only runs against loopback"):
        loadtest.check_loopback(url)
    assert loadtest.check_loopback("http://127.0.0.1:7860") == "http://127.0.0.1:7860/"
    with pytest.raises(SystemExit):
        loadtest.parse_args(["--clients", "1000"])
