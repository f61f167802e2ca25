"""The app's API through gradio_client, against ``python app.py`` running in a subprocess.

``/reconstruct`` takes plain values (an example name, or uploaded files with ``handle_file``; for a
recording with events, ``event``, ``occurrence`` (1-based) and ``average``, its last parameters) and
returns (reconstruction, saliency map, caption, class probabilities, seed used, top captions, seen image,
ablation gallery, notes, title naming the trial, start image): the saliency map is the generator's, the start
image what the diffusion starts from (the map with the layout prior's template drawn in). Bad files must come back as a clear ``AppError`` while
the app keeps serving, and write one line to the server's log. The handlers' pure helpers are tested
here too, without a server.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from app_server import app_server, write_recording  # noqa: F401 (the shared server fixture)
from PIL import Image

from neuroimagen.data.classes import CLASS_NAMES, label_caption

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

GENERIC_ERROR = "has not enabled verbose error reporting"  # what users see when an exception is not explained


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):  # noqa: F811
    return Client(app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("client-downloads")))


@pytest.fixture(scope="module")
def example(app_server):  # noqa: F811
    """(name, label, npz path) of the first example the app offers."""
    root = app_server.examples
    index = root / "index.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        entries = entries.get("examples", entries) if isinstance(entries, dict) else entries
        e = next(e for e in entries if e["file"].endswith(".npz"))
        return Path(e["file"]).stem, e.get("label"), root / e["file"]
    path = sorted(root.glob("*.npz"))[0]
    return path.stem, int(np.load(path)["label"]), path


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def _assert_not_blank(path) -> None:
    px = _pixels(path)
    assert px.shape[0] >= 16 and px.shape[1] >= 16
    assert px.std() > 2.0, f"{path} is (nearly) uniform"


def _reconstruct(client, **kwargs):
    kwargs.setdefault("num_inference_steps", 10)  # keep CPU time low; the defaults are covered once below
    return client.predict(api_name="/reconstruct", **kwargs)


def _raw_from_example(npz_path):
    import mne

    with np.load(npz_path, allow_pickle=False) as z:
        data, sfreq, names = z["data"], float(z["sfreq"]), [str(n) for n in z["ch_names"]]
    info = mne.create_info(names, sfreq, ch_types="eeg")
    return mne.io.RawArray(data, info, verbose="error")


def test_reconstruct_example(client, example):
    name, label, _ = example
    recon, sal, caption, probs, seed, captions, stimulus, ablation, notes, title, start = client.predict(
        source="example", example=name, seed=123, api_name="/reconstruct")  # every other input at its default
    _assert_not_blank(recon)
    _assert_not_blank(sal)
    _assert_not_blank(start)
    assert _pixels(start).shape == _pixels(sal).shape
    _assert_not_blank(stimulus)  # the example's true stimulus is shown beside the reconstruction
    assert caption in {label_caption(i) for i in range(len(CLASS_NAMES))}
    assert seed == 123
    confidences = probs["confidences"]
    assert len(confidences) == 5 and {c["label"] for c in confidences} <= set(CLASS_NAMES)
    assert probs["label"] == confidences[0]["label"]
    assert sorted((c["confidence"] for c in confidences), reverse=True) == [c["confidence"] for c in confidences]
    assert caption in captions  # the caption is among the top captions listed
    assert "Seed 123" in notes and "25 steps" in notes
    assert not ablation  # only with the checkbox
    assert f"example {name}" in title  # the results name the trial they are of


def test_seed_reproduces_and_randomize_returns_the_seed_used(client, example):
    name = example[0]
    a = _reconstruct(client, source="example", example=name, seed=7)
    b = _reconstruct(client, source="example", example=name, seed=7)
    assert np.array_equal(_pixels(a[0]), _pixels(b[0]))
    r = _reconstruct(client, source="example", example=name, seed=7, randomize_seed=True)
    used = r[4]
    assert isinstance(used, int) and 0 <= used < 2**31
    again = _reconstruct(client, source="example", example=name, seed=used)
    assert np.array_equal(_pixels(r[0]), _pixels(again[0]))


def test_ablation_shows_three_conditions(client, example):
    out = _reconstruct(client, source="example", example=example[0], seed=1, ablation=True)
    gallery = out[7]
    assert [g["caption"] for g in gallery] == ["saliency map only", "caption only", "saliency map + caption"]
    images = [_pixels(g["image"]) for g in gallery]
    assert np.array_equal(images[2], _pixels(out[0]))  # "both" is the main reconstruction
    assert not np.array_equal(images[0], images[1])


def test_upload_fif(client, example, tmp_path):
    path = tmp_path / "trial_raw.fif"
    _raw_from_example(example[2]).save(path, verbose="error")
    out = _reconstruct(client, source="upload", files=[handle_file(str(path))], seed=3)
    _assert_not_blank(out[0])
    _assert_not_blank(out[1])
    assert out[2].startswith("an image of")


def test_upload_edf_shows_the_trial(client, example, tmp_path):
    import mne

    path = tmp_path / "trial.edf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(path, _raw_from_example(example[2]), fmt="edf", verbose="error")
    source, facts, butterfly, topomap, channels, _ = client.predict(files=[handle_file(str(path))], time_ms=170,
                                                                    api_name="/show_upload")
    assert source == "upload"
    assert "trial.edf" in facts and "as read" in facts
    assert "mapped" in channels
    _assert_not_blank(butterfly)
    _assert_not_blank(topomap)
    out = _reconstruct(client, source="upload", files=[handle_file(str(path))], seed=3)
    _assert_not_blank(out[0])


def test_upload_brainvision_with_companions(client, example, tmp_path):
    import mne

    pytest.importorskip("pybv")
    path = tmp_path / "trial.vhdr"
    mne.export.export_raw(path, _raw_from_example(example[2]), fmt="brainvision", verbose="error")
    files = [handle_file(str(tmp_path / f"trial{ext}")) for ext in (".vhdr", ".eeg", ".vmrk")]
    out = _reconstruct(client, source="upload", files=files, seed=3)
    _assert_not_blank(out[0])


def test_a_recording_with_events_is_cut_at_the_event_chosen(client, example, tmp_path):
    """A 32-channel continuous recording with events: nothing is chosen for the user (the panel lists the
    events, Reconstruct refuses naming them); the chosen occurrence, or the average, is what is shown and
    reconstructed, with its coverage and expected accuracy."""
    from neuroimagen.data.caps import TEN_TWENTY_32

    path = tmp_path / "session_raw.fif"
    write_recording(path, example[2], TEN_TWENTY_32, n_events=3)
    files = [handle_file(str(path))]

    _, facts, butterfly, _, _, _ = client.predict(files=files, time_ms=170, api_name="/show_upload")
    assert "choose an event" in facts and "| stimulus | 3 |" in facts and "| response | 3 |" in facts
    assert butterfly is None  # no trial shown until one is chosen
    with pytest.raises(AppError, match=r"with events: 'response' \(3x\), 'stimulus' \(3x\)"):
        _reconstruct(client, source="upload", files=files)

    _, facts, butterfly, _, channels, _ = client.predict(files=files, time_ms=170, event="stimulus", occurrence=2,
                                                         api_name="/show_upload")
    assert "upload session_raw.fif, 'stimulus' 2" in facts and "occurrence 2 of 3 of 'stimulus'" in facts
    assert "32 of 128 model channels recorded, 96 interpolated from 32 channels (10-05 names)" in facts
    assert "**Expected accuracy** (32 channels)" in facts
    assert "read as**: 10-05 names" in channels
    _assert_not_blank(butterfly)

    out = _reconstruct(client, source="upload", files=files, event="stimulus", occurrence=2, seed=4)
    _assert_not_blank(out[0])
    assert "upload session_raw.fif, 'stimulus' 2" in out[9]
    avg = _reconstruct(client, source="upload", files=files, event="stimulus", average=True, seed=4)
    assert "average of 3 'stimulus'" in avg[9]
    with pytest.raises(AppError, match=r"no event 'S  1': its events are 'response' \(3x\), 'stimulus'"):
        _reconstruct(client, source="upload", files=files, event="S  1")
    with pytest.raises(AppError, match="has 3 occurrences of 'stimulus'"):
        _reconstruct(client, source="upload", files=files, event="stimulus", occurrence=4)


def _format_examples(app_server):  # noqa: F811
    index = app_server.examples / "formats" / "index.json"
    if not index.is_file():
        pytest.skip("no examples/formats/index.json (python scripts/make_examples.py --only caps)")
    return [e for e in json.loads(index.read_text())["formats"] if e.get("cap") != "actiCAP 128"]


def test_the_example_files_of_other_caps_are_read_and_decoded(client, app_server):  # noqa: F811
    """The shipped recordings on other caps (BioSemi .bdf, BrainVision, continuous FIF, epochs FIF), uploaded
    as a user would, cut at their first stimulus: read, interpolated, decoded; shown with their seen image."""
    entries = _format_examples(app_server)
    assert {e["format"] for e in entries} >= {"BioSemi (BDF)", "BrainVision", "MNE (FIF)", "MNE epochs (FIF)"}
    decoded = []
    for e in entries:
        folder = app_server.examples / "formats"
        files = [handle_file(str(folder / f)) for f in [e["file"], *e["companions"]]]
        stimulus_events = [name for name in e["events"] if name.lower().startswith("stim")]
        event = stimulus_events[0] if stimulus_events else None
        out = _reconstruct(client, source="upload", files=files, event=event, seed=0)
        _assert_not_blank(out[0])
        assert np.array_equal(_pixels(out[6]), _pixels(folder / e["stimulus"]))  # recognised: its seen image
        assert f"true class: {e['class_name']}" in out[9]
        top5 = [c["label"] for c in out[3]["confidences"]]
        assert e["class_name"] in top5, f"{e['file']}: {e['class_name']} not in the top 5 ({top5})"
        decoded.append(top5[0] == e["class_name"])
    assert sum(decoded) > len(decoded) / 2, f"the class of {sum(decoded)} of {len(decoded)} files decoded"


def test_noise_gets_a_banner_and_a_trial_its_confidence(client, example, app_server, tmp_path):  # noqa: F811
    """White noise at EEG amplitude, uploaded as a trial on the model's cap: the results say the model has not
    seen EEG like this and that the picture is a guess; an example trial gets its decoded class and confidence,
    and no banner (the pipeline's decoding check, reports/confidence/demo)."""
    from neuroimagen.data import EEGTrial, write_trial
    from neuroimagen.data.montage import SFREQ, model_ch_names

    if not (app_server.checkpoint / "decoding_check").is_dir():
        pytest.skip("this checkpoint has no decoding check")
    names = list(model_ch_names())
    noise = 10e-6 * np.random.default_rng(0).standard_normal((len(names), 500))
    path = write_trial(EEGTrial(noise, SFREQ, names), tmp_path / "white_noise.npz")
    foreign = _reconstruct(client, source="upload", files=[handle_file(str(path))])
    assert "has not seen EEG like this" in foreign[9] and "not a reconstruction" in foreign[9]
    assert "confidence" in foreign[9]
    name, label, _ = example
    known = _reconstruct(client, source="example", example=name)
    assert "has not seen EEG like this" not in known[9]
    assert f"Decoded class: **{CLASS_NAMES[label]}**, confidence" in known[9]


def test_bad_files_get_clear_errors_and_the_app_keeps_serving(client, example, tmp_path):
    name = example[0]
    txt = tmp_path / "notes.txt"
    txt.write_text("not EEG")
    with pytest.raises(AppError, match="Invalid file type") as err:
        _reconstruct(client, source="upload", files=[handle_file(str(txt))])
    assert ".edf" in str(err.value)  # says what is accepted

    corrupt = tmp_path / "broken.edf"
    corrupt.write_bytes(b"0       " + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)))
    with pytest.raises(AppError) as err:
        _reconstruct(client, source="upload", files=[handle_file(str(corrupt))])
    assert GENERIC_ERROR not in str(err.value) and "edf" in str(err.value).lower(), str(err.value)

    fif = tmp_path / "a_raw.fif"
    _raw_from_example(example[2]).save(fif, verbose="error")
    with pytest.raises(AppError, match="exactly one trial file"):
        _reconstruct(client, source="upload", files=[handle_file(str(fif)), handle_file(str(corrupt))])
    with pytest.raises(AppError, match="No file uploaded"):
        _reconstruct(client, source="upload")

    # Still serving, and the next good request works.
    out = _reconstruct(client, source="example", example=name, seed=5)
    _assert_not_blank(out[0])


def test_layout_prior_weight_changes_the_start_image(client, example, app_server):  # noqa: F811
    """The embedded checkpoint has a layout prior: by default its template is drawn into the start image (the
    notes say so), never into the saliency map (the generator's, output 1); at weight 0 the start image is that
    map. A checkpoint without one refuses a weight."""
    name = example[0]
    default = _reconstruct(client, source="example", example=name, seed=2)
    off = _reconstruct(client, source="example", example=name, seed=2, layout_weight=0)
    saliency, start = 1, 10
    assert np.array_equal(_pixels(default[saliency]), _pixels(off[saliency]))  # the generator's map either way
    assert np.array_equal(_pixels(off[start]), _pixels(off[saliency]))
    if (app_server.checkpoint / "layout_prior").is_dir():
        assert "Layout prior (weight 1)" in default[8] and "Layout prior" not in off[8]
        # the template is visible in the start image, and only there
        assert np.abs(_pixels(default[start]) - _pixels(default[saliency])).mean() > 1.0
        assert not np.array_equal(_pixels(default[0]), _pixels(off[0]))
    else:
        assert np.array_equal(_pixels(default[start]), _pixels(default[saliency]))
        with pytest.raises(AppError, match="needs a layout_prior component"):
            _reconstruct(client, source="example", example=name, layout_weight=1.0)


def test_too_few_steps_for_the_strength_are_refused_and_the_fewest_run(client, example):
    """Steps 1 at strength 0.75 gives int(0.75) = 0 denoising steps: refused before running, naming the fewest."""
    with pytest.raises(AppError, match="at strength=0.75 num_inference_steps must be at least 2, but got 1"):
        _reconstruct(client, source="example", example=example[0], num_inference_steps=1, strength=0.75)
    out = _reconstruct(client, source="example", example=example[0], num_inference_steps=2, strength=0.75)
    _assert_not_blank(out[1])
    assert "2 steps at strength 0.75 (img2img runs 1)" in out[8]


def _new_log(app_server, offset: int, n_lines: int, timeout_s: float = 10.0) -> str:  # noqa: F811
    """The server's log after ``offset``, once it has ``n_lines`` lines (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = app_server.log.read_bytes()[offset:].decode(errors="replace")
        if len(text.splitlines()) >= n_lines or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_a_user_error_writes_one_log_line(client, example, app_server, tmp_path):  # noqa: F811
    """A user's mistake is one line in the server log (what and why), never a traceback."""
    corrupt = tmp_path / "broken.edf"
    corrupt.write_bytes(b"0       " + bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)))
    txt = tmp_path / "notes.txt"
    txt.write_text("not EEG")
    mistakes = [dict(source="upload", files=[handle_file(str(corrupt))]),  # the library's message
                dict(source="upload", files=[handle_file(str(txt))]),  # the upload widget's file-type check
                dict(source="example", example=example[0], num_inference_steps=1),  # the pipeline's
                dict(source="example", example=example[0], strength=0.0),  # Gradio's own slider range check
                dict(source="upload")]  # the app's
    for k, kwargs in enumerate(mistakes):
        offset = app_server.log.stat().st_size
        with pytest.raises(AppError):
            _reconstruct(client, **kwargs)
        _new_log(app_server, offset, 1)
        time.sleep(0.5)  # anything printed after the line (a traceback) would arrive now
        log = _new_log(app_server, offset, 1)
        assert "Traceback" not in log, f"mistake {k} printed a traceback:\n{log}"
        lines = [ln for ln in log.splitlines() if ln.strip()]
        assert len(lines) == 1 and "refused" in lines[0], f"mistake {k} should write one line, wrote:\n{log}"
    assert "broken.edf" in app_server.log.read_text(errors="replace")  # the line says which file


def test_out_of_range_settings_are_explained(client, example):
    with pytest.raises(AppError, match="0.05") as err:  # names the allowed minimum
        _reconstruct(client, source="example", example=example[0], strength=0.0)
    assert GENERIC_ERROR not in str(err.value)
    with pytest.raises(AppError, match="detailed"):  # lists the allowed caption sources
        _reconstruct(client, source="example", example=example[0], caption_source="blip")


def test_topomap_follows_the_latency(client, example):
    client.predict(example=example[0], time_ms=170, api_name="/show_example")  # loads the session's trial
    early = _pixels(client.predict(time_ms=60, api_name="/topomap"))
    late = _pixels(client.predict(time_ms=300, api_name="/topomap"))
    assert early.shape == late.shape and not np.array_equal(early, late)


def test_simulated_trial(client):
    pytest.importorskip("neuroimagen.data.simulate")
    source, facts, butterfly, _, _, stimulus = client.predict(sim_class="banana", sim_image=3, sim_subject=2,
                                                              sim_noise="demo", api_name="/simulate")
    assert source == "simulate" and "banana" in facts
    _assert_not_blank(butterfly)
    _assert_not_blank(stimulus)
    out = _reconstruct(client, source="simulate", sim_class="banana", sim_image=3, sim_subject=2, seed=0)
    _assert_not_blank(out[0])
    assert np.array_equal(_pixels(out[6]), _pixels(stimulus))  # the simulated trial's own stimulus


# ---------------------------------------------------------------------------------------------- helpers
def test_user_errors_turn_mistakes_into_quiet_messages_and_let_bugs_through():
    import gradio as gr

    from demo.errors import user_errors

    @user_errors
    def handler(kind):
        raise {"mistake": ValueError("Invalid value for the 'x' parameter."), "bug": KeyError("oops")}[kind]

    with pytest.raises(gr.Error) as err:
        handler("mistake")
    assert err.value.message == "Invalid value for the 'x' parameter." and not err.value.print_exception
    with pytest.raises(KeyError):  # a bug keeps its type, so Gradio prints its traceback
        handler("bug")


def test_a_page_shows_the_loads_of_its_selected_tab_only():
    """A trial load that ends after its page selected another tab changes nothing there (browser test:
    ``test_an_example_that_loads_after_upload_was_chosen_is_not_shown``); API sessions select no tab, the
    record is bounded and a closed page is forgotten."""
    import gradio as gr

    from demo.handlers import SelectedTabs

    tabs = SelectedTabs(max_sessions=2)
    a, b, c = (gr.Request(session_hash=s) for s in "abc")
    tabs.select(a, "upload")
    assert tabs.stale(a, "example") and tabs.stale(a, "simulate") and not tabs.stale(a, "upload")
    assert not tabs.stale(b, "example") and not tabs.stale(None, "example")  # no tab selected: an API client
    tabs.select(b, "simulate")
    tabs.select(c, "example")  # a third page: the oldest record (a) goes
    assert not tabs.stale(a, "example") and tabs.stale(b, "upload") and tabs.stale(c, "simulate")
    tabs.forget(b)
    assert not tabs.stale(b, "upload")


def test_upload_examples_one_entry_per_format_with_its_own_companions(tmp_path):
    from demo.examples import upload_examples

    formats = tmp_path / "formats"
    formats.mkdir()
    for ext in (".vhdr", ".eeg", ".vmrk", ".edf", ".fif", ".set"):
        (formats / f"trial{ext}").write_bytes(b"x")
    entries = upload_examples(tmp_path)
    assert [label for label, _ in entries] == ["BrainVision: trial.vhdr + .eeg + .vmrk", "EEGLAB: trial.set",
                                               "MNE (FIF): trial.fif", "EDF: trial.edf"]
    files = {Path(paths[0]).suffix: [Path(p).name for p in paths] for _, paths in entries}
    assert files[".vhdr"] == ["trial.vhdr", "trial.eeg", "trial.vmrk"]
    assert files[".edf"] == ["trial.edf"] and files[".set"] == ["trial.set"]  # no BrainVision files with them


def test_expected_accuracy_is_read_from_the_cap_measurements(tmp_path):
    """Interpolated by channel count between the caps measured (caps of one size averaged), the largest cap's
    above it; nothing below the smallest or without the file."""
    from demo.views import expected_accuracy

    metrics = tmp_path / "metrics.json"
    caps = {"actiCAP 128": (128, 0.98, 0.90), "10-10 64": (64, 0.96, 0.86), "BioSemi 64": (64, 0.94, 0.84),
            "10-20 32": (32, 0.85, 0.75), "occipito-parietal 8": (8, 0.40, 0.30)}
    metrics.write_text(json.dumps({"preset": "demo", "caps": {
        name: {"n_chans": n, "trained subjects": {"top1": t, "top5": 1.0}, "new subjects": {"top1": s}}
        for name, (n, t, s) in caps.items()}}))
    assert expected_accuracy(128, metrics) == pytest.approx({"trained subjects": 0.98, "new subjects": 0.90})
    assert expected_accuracy(64, metrics) == pytest.approx({"trained subjects": 0.95, "new subjects": 0.85})
    assert expected_accuracy(48, metrics)["new subjects"] == pytest.approx((0.85 + 0.75) / 2)
    assert expected_accuracy(19, metrics)["trained subjects"] == pytest.approx(0.40 + 0.45 * 11 / 24)
    assert expected_accuracy(256, metrics)["new subjects"] == pytest.approx(0.90)
    assert expected_accuracy(6, metrics) is None
    assert expected_accuracy(32, tmp_path / "missing.json") is None
    metrics.write_text("{not json")
    assert expected_accuracy(32, metrics) is None


def test_expected_accuracy_line_says_what_was_measured(tmp_path):
    from types import SimpleNamespace

    from demo.views import expected_accuracy_text

    trial = SimpleNamespace(info={"channels": {"n_used": 32}})
    assert expected_accuracy_text(trial, tmp_path / "missing.json").endswith("not measured (reports/caps/demo is "
                                                                             "not there).")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"caps": {"10-20 32": {"n_chans": 32, "trained subjects": {"top1": 0.854},
                                                         "new subjects": {"top1": 0.7649}}}}))
    assert expected_accuracy_text(trial, metrics) == (
        "**Expected accuracy** (32 channels): about 76 % top-1 on simulated trials (demo preset) of people the "
        "model never saw; 85 % for those it was trained on.")
    assert "not measured (no cap this small" in expected_accuracy_text(
        SimpleNamespace(info={"channels": {"n_used": 19}}), metrics)


def test_model_card_front_matter_becomes_a_table():
    from demo.model_card import split_model_card

    card = split_model_card("---\nlicense: cc-by-sa-4.0\ntags: [eeg, diffusion]\n---\n\n# tiny\n\nIntro.\n\n"
                            "## Components\n\n| a | b |\n\n## Limits\n\n- simulated\n")
    assert card.title == "tiny" and card.intro == "Intro."
    assert "| license | cc-by-sa-4.0 |" in card.metadata and "| tags | eeg, diffusion |" in card.metadata
    assert [h for h, _ in card.sections] == ["Components", "Limits"] and card.sections[1][1] == "- simulated"
    assert split_model_card("Just text.").metadata == ""


def test_captions_are_shown_in_plain_words():
    from types import SimpleNamespace

    from demo.views import captions_table

    out = SimpleNamespace(captions=[[("an image of a banana", 0.9)]],
                          detailed_captions=[[("a small banana at the top, mirrored, on a white background", 0.5)]])
    table = captions_table(out)
    assert "mirrored" not in table and "flipped left to right" in table
    assert "| 0.500 |" in table
