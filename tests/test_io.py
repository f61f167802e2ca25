"""read_trial / write_trial: every upload format, and every bad input gets a clear message (tests/data/bad)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, smooth_eeg, write_exploit

from neuroimagen.data import EEGTrial, load_eeg_imagenet, preprocess, read_trial, write_trial
from neuroimagen.data.io import TrialFileError

BAD_DIR = Path(__file__).parent / "data" / "bad"
MANIFEST = json.loads((BAD_DIR / "manifest.json").read_text())
FORMATS = [".npz", ".npy", ".pth", ".fif", ".edf", ".bdf", ".set", ".vhdr"]


# ---------------------------------------------------------------- the committed bad-input corpus
def test_corpus_is_complete_small_and_current(tmp_path):
    files = {f.name for f in BAD_DIR.iterdir()} - {"manifest.json"}
    assert files == set(MANIFEST), "tests/data/bad and its manifest disagree: run scripts/make_bad_inputs.py"
    assert sum(f.stat().st_size for f in BAD_DIR.iterdir()) < 2 * 2**20
    # the script still writes what is committed (same cases, same expectations)
    assert load_script("make_bad_inputs").make_bad_inputs(tmp_path) == MANIFEST


# Each corpus file through the library and through the app: tests/test_reliability.py (a pair, one manifest).


def test_corrupt_files_say_truncated_or_corrupt():
    for name in ("truncated.edf", "truncated.fif", "corrupt.fif", "corrupt.npz", "corrupt.pth"):
        with pytest.raises(TrialFileError, match="The file may be truncated or corrupt.$"):
            read_trial(BAD_DIR / name)


# ---------------------------------------------------------------- good input: every format
@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_round_trips_to_the_same_model_space(smooth_trial, tmp_path, ext):
    path = write_trial(smooth_trial, tmp_path / f"trial{ext}")
    back = read_trial(path)
    assert back.data.shape == (128, 500) and back.sfreq == 1000.0 and back.ch_names == smooth_trial.ch_names
    assert back.info["file"] == f"trial{ext}"
    np.testing.assert_allclose(back.data, smooth_trial.data, atol=2e-8 if ext == ".edf" else 1e-9)  # volts kept
    np.testing.assert_allclose(preprocess(back).data, preprocess(smooth_trial).data, atol=5e-3)
    if ext in (".npz", ".pth"):
        assert (back.subject, back.label) == (2, 8)
    if ext == ".vhdr":
        assert {p.suffix for p in tmp_path.iterdir()} == {".vhdr", ".vmrk", ".eeg"}


def test_npz_and_pth_keep_the_stimulus(smooth_trial, tmp_path):
    stim = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    trial = EEGTrial(smooth_trial.data, 1000.0, smooth_trial.ch_names, stimulus=stim)
    for ext in (".npz", ".pth"):
        np.testing.assert_array_equal(read_trial(write_trial(trial, tmp_path / f"t{ext}")).stimulus, stim)


def test_brainvision_needs_its_companions(smooth_trial, tmp_path):
    path = write_trial(smooth_trial, tmp_path / "rec.vhdr")
    (tmp_path / "rec.vmrk").unlink()
    with pytest.raises(ValueError, match="'rec.vhdr' names 'rec.vmrk', which is not beside it: a BrainVision "
                                         "recording is three files"):
        read_trial(path)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_an_epochs_file_keeps_its_tmin_and_index_or_average_choose(smooth_trial, tmp_path):
    import mne

    from neuroimagen.data.montage import make_info

    one = smooth_eeg(700)
    data = np.stack([one, 2 * one, -one])  # 3 epochs, -200 .. 499 ms
    mne.EpochsArray(data, make_info(), tmin=-0.2, verbose="error").save(tmp_path / "t-epo.fif", verbose="error")
    back = read_trial(tmp_path / "t-epo.fif")
    assert back.tmin == pytest.approx(-0.2) and back.data.shape == (128, 700)
    np.testing.assert_allclose(back.data, one, rtol=1e-6, atol=1e-12)
    assert back.info["note"] == "epoch 1 of 3, from -200 ms"
    second = read_trial(tmp_path / "t-epo.fif", index=1)
    np.testing.assert_allclose(second.data, 2 * one, rtol=1e-6, atol=1e-12)
    mean = read_trial(tmp_path / "t-epo.fif", average=True)
    np.testing.assert_allclose(mean.data, data.mean(0), rtol=1e-5, atol=1e-12)
    assert mean.info["note"].startswith("average of 3 epochs") and mean.info["n_averaged"] == 3
    with pytest.raises(ValueError, match="'t-epo.fif' has 3 epochs: expected index from 0 to 2, got 3"):
        read_trial(tmp_path / "t-epo.fif", index=3)

    # the model input starts 20 ms after onset: the epoch decodes like the unshifted trial, not like one whose
    # tmin is ignored (onset taken at its first sample)
    unshifted = preprocess(EEGTrial(one[:, 200:], 1000.0, smooth_trial.ch_names, tmin=0.0)).data
    ignored = preprocess(EEGTrial(back.data, 1000.0, back.ch_names)).data
    model_input = preprocess(back).data
    assert _corr(model_input, unshifted) > 0.95 > _corr(ignored, unshifted) + 0.2


def _continuous(smooth_trial, n_events: int = 4, gap: int = 700):
    """A continuous recording with ``n_events`` 'stim' annotations, each followed by the smooth trial (x k+1)."""
    import mne

    from neuroimagen.data.montage import make_info

    n = 400 + n_events * gap
    x = np.zeros((128, n))
    onsets = [300 + k * gap for k in range(n_events)]
    for k, on in enumerate(onsets):
        x[:, on - 100:on + 500] += (k + 1) * smooth_eeg(600)
    raw = mne.io.RawArray(x, make_info(), verbose="error")
    raw.set_annotations(mne.Annotations([o / 1000 for o in onsets], [0.0] * n_events, ["stim"] * n_events))
    return raw, onsets


@pytest.mark.parametrize("ext", [".fif", ".vhdr", ".edf"])
def test_a_continuous_recording_gives_the_trial_of_one_event(smooth_trial, tmp_path, ext):
    """One occurrence gives the same model input as that trial written as an epoch; events are listed;
    nothing is chosen silently."""
    import mne

    from neuroimagen.data import read_events
    from neuroimagen.data.montage import make_info

    raw, onsets = _continuous(smooth_trial)
    path = tmp_path / f"rec{ext}"
    if ext == ".fif":
        raw.save(path, verbose="error")
    else:
        mne.export.export_raw(path, raw, physical_range="channelwise" if ext == ".edf" else "auto", verbose="error")
    events = read_events(path)
    stim = "Comment/stim" if ext == ".vhdr" else "stim"  # MNE exports annotations as BrainVision comments
    assert list(events) == [stim] and np.allclose(events[stim], np.array(onsets) / 1000, atol=2e-3)
    with pytest.raises(ValueError, match=r"'rec" + re.escape(ext) + r"' is a continuous recording of 3\.2 s with "
                                         rf"events: '{stim}' \(4x\)\. Choose the event"):
        read_trial(path)
    with pytest.raises(ValueError, match=rf"has no event 'Stimulus/S 1': its events are '{stim}' \(4x\)"):
        read_trial(path, event="Stimulus/S 1")
    trial = read_trial(path, event=stim, index=2, tmin=-0.1, tmax=0.5)
    assert trial.tmin == pytest.approx(-0.1) and trial.data.shape == (128, 600)
    assert trial.info["note"] == f"occurrence 3 of 4 of '{stim}', -100 to +500 ms, baseline before onset"
    epoch = mne.EpochsArray(3 * smooth_eeg(600)[None], make_info(), tmin=-0.1, baseline=(None, 0), verbose="error")
    epoch.save(tmp_path / "one-epo.fif", verbose="error")
    atol = 5e-3 if ext == ".edf" else 1e-4  # EDF stores 16-bit integers
    np.testing.assert_allclose(preprocess(trial).data, preprocess(read_trial(tmp_path / "one-epo.fif")).data,
                               atol=atol)
    erp = read_trial(path, event=stim, average=True, tmin=-0.1, tmax=0.5)
    assert erp.info["n_averaged"] == 4 and f"average of 4 occurrences of '{stim}'" in erp.info["note"]
    assert _corr(erp.data, smooth_eeg(600)) > 0.99  # (1 + 2 + 3 + 4) / 4 times the trial


def test_a_recording_without_events_is_one_trial_only_when_short(smooth_trial, tmp_path):
    import mne

    from neuroimagen.data.montage import make_info

    long = mne.io.RawArray(np.tile(smooth_trial.data, (1, 18)), make_info(), verbose="error")  # 9 s, no events
    long.save(tmp_path / "long_raw.fif", verbose="error")
    with pytest.raises(ValueError, match=r"'long_raw.fif' is a continuous recording of 9.0 s without events: "
                                         r"expected one trial \(at most 1 s"):
        read_trial(tmp_path / "long_raw.fif")
    path = write_trial(smooth_trial, tmp_path / "short_raw.fif")
    short = read_trial(path)
    assert short.tmin == 0 and "stimulus onset taken at its first sample" in short.info["assumed"]


def test_pth_items_and_bare_arrays(smooth_trial, tmp_path, model_names):
    eeg = torch.from_numpy(smooth_trial.data).half()
    torch.save({"eeg": eeg, "label": 5, "image": 17, "subject": 3}, tmp_path / "item.pth")  # one EEG-ImageNet item
    item = read_trial(tmp_path / "item.pth")
    assert (item.label, item.subject, item.info["image"], item.sfreq) == (5, 3, 17, 1000.0)
    assert item.ch_names == model_names and "taken as the model's 128 channels at 1000 Hz" in item.info["assumed"]
    torch.save(eeg, tmp_path / "tensor.pth")
    np.testing.assert_array_equal(read_trial(tmp_path / "tensor.pth").data, eeg.double().numpy())
    np.savez(tmp_path / "rate.npz", data=smooth_trial.data, sfreq=500.0)  # a rate but no names
    assert read_trial(tmp_path / "rate.npz").sfreq == 500.0
    np.savez(tmp_path / "names.npz", eeg=smooth_trial.data[:3], ch_names=["Cz", "Pz", "Oz"])  # names, no rate
    named = read_trial(tmp_path / "names.npz")
    assert named.ch_names == ["Cz", "Pz", "Oz"] and "taken as 1000 Hz" in named.info["assumed"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pickle_with_code_is_refused_and_never_run(tmp_path, legacy):
    marker = tmp_path / "pwned.txt"
    path = write_exploit(tmp_path / "evil.pth", marker, legacy)
    with pytest.raises(ValueError, match="'evil.pth'") as err:
        read_trial(path)
    assert "could run code" in str(err.value) or "safe loader" in str(err.value)
    with pytest.raises(ValueError, match="'evil.pth'"):
        load_eeg_imagenet(path, split=None)
    assert not marker.exists(), "the pickle's code ran"
    if not legacy:
        assert "Refused to load 'evil.pth': the file carries Python objects" in str(err.value)


def test_oversized_file_is_refused_before_reading(smooth_trial, tmp_path, monkeypatch):
    import neuroimagen.data.io as io

    path = write_trial(smooth_trial, tmp_path / "big.npz")
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(io, "_read_npz", lambda p: pytest.fail("the file was read"))
    with pytest.raises(ValueError, match=r"'big.npz' is 0\.\d MB: the limit is 0 MB for one trial"):
        read_trial(path)


def test_missing_file_and_bad_arguments(tmp_path, smooth_trial):
    with pytest.raises(FileNotFoundError, match="No file at"):
        read_trial(tmp_path / "nothing.edf")
    with pytest.raises(TypeError, match="path must be an instance of str or Path, got int instead"):
        read_trial(3)
    with pytest.raises(TrialFileError, match="Unsupported file type '.mat' for 't.mat'. Allowed: .npz, .npy"):
        write_trial(smooth_trial, tmp_path / "t.mat")
    with pytest.raises(TypeError, match="trial must be an instance of EEGTrial, got ndarray instead"):
        write_trial(smooth_trial.data, tmp_path / "t.npz")


def test_write_trial_raises_the_read_errors_family_and_takes_the_same_paths(tmp_path, smooth_trial):
    """A user catching TrialFileError (or ValueError) around read_trial catches write_trial's file problems too,
    and both take any os.PathLike."""
    for bad in (tmp_path / "t.mat", tmp_path / "rec.edf"):
        with pytest.raises(TrialFileError):
            write_trial(EEGTrial(smooth_trial.data, 1000.0, smooth_trial.ch_names, tmin=-0.1), bad)
    with pytest.raises(TrialFileError, match="Invalid trial"):
        write_trial(EEGTrial(smooth_trial.data, 1000.0, ["Cz"]), tmp_path / "t.npz")

    class OtherPath(os.PathLike):
        def __init__(self, p):
            self.p = str(p)

        def __fspath__(self):
            return self.p

    path = write_trial(smooth_trial, OtherPath(tmp_path / "t.npz"))
    np.testing.assert_array_equal(read_trial(OtherPath(path)).data, read_trial(path).data)
    with pytest.raises(TypeError, match="path must be an instance of str or Path, got int instead"):
        write_trial(smooth_trial, 3)


def test_an_archive_that_unpacks_too_big_is_refused(tmp_path, monkeypatch):
    import neuroimagen.data.io as io

    np.savez_compressed(tmp_path / "bomb.npz", data=np.zeros((128, 2000), np.float32))  # ~1 MB unpacked, ~1 KB packed
    monkeypatch.setattr(io, "MAX_FILE_BYTES", 100_000)
    with pytest.raises(ValueError, match=r"'bomb.npz' unpacks to 1.0 MB: the limit is 0 MB"):
        read_trial(tmp_path / "bomb.npz")


# ---------------------------------------------------------------- only the given files are ever read
SENTINEL_OPENS: list[str] = []


def _watch_opens(event, args):
    """A test-side audit hook: every open of a path whose name holds 'sentinel' is recorded (never blocked)."""
    if event == "open" and not isinstance(args[0], int) and "sentinel" in os.fsdecode(args[0]):
        SENTINEL_OPENS.append(os.fsdecode(args[0]))


sys.addaudithook(_watch_opens)  # permanent for the session; it only records


@pytest.fixture
def sentinel(tmp_path, smooth_trial):
    """A BrainVision recording outside the upload folder whose data WOULD decode fine (and a large file), and
    an upload folder holding a header; the test fails if any sentinel file is ever opened."""
    outside = tmp_path / "outside"
    outside.mkdir()
    write_trial(EEGTrial(smooth_trial.data[:1], 1000.0, ["Cz"]), outside / "sentinel.vhdr")
    (outside / "sentinel_large.eeg").write_bytes(b"\0" * (4 * 2**20))  # "a reference to a large file"
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    SENTINEL_OPENS.clear()
    yield outside, uploads
    assert not SENTINEL_OPENS, f"a file outside the given ones was opened: {SENTINEL_OPENS}"


def _header(uploads: Path, data_line: str, marker_line: str, comment: str = "") -> Path:
    vhdr_text = load_script("make_bad_inputs").vhdr_text
    path = uploads / "rec.vhdr"
    path.write_text(vhdr_text(data_line, marker_line, comment))
    (uploads / "rec.eeg").write_bytes(np.zeros(500, np.float32).tobytes())  # the uploaded companions
    (uploads / "rec.vmrk").write_text("Brain Vision Data Exchange Marker File, Version 1.0\n[Marker Infos]\n")
    return path


@pytest.mark.parametrize("data_line, marker_line, comment, where", [
    ("datafile={out}/sentinel.eeg", "MarkerFile=rec.vmrk", "DataFile=rec.eeg", "DataFile="),  # lower case
    ("DATAFILE={out}/sentinel.eeg", "MarkerFile=rec.vmrk", "", "DataFile="),  # upper case
    ("DataFile=rec.eeg", "mArKeRfIlE={out}/sentinel.vmrk", "MarkerFile=rec.vmrk", "MarkerFile="),  # mixed case
    ("DataFile=../outside/sentinel.eeg", "MarkerFile=rec.vmrk", "", "DataFile='../outside/"),  # relative, ..
    ("DataFile={out}/sentinel_large.eeg", "MarkerFile=rec.vmrk", "", "sentinel_large.eeg"),  # a large file
    ("DataFile=rec.eeg", "MarkerFile=rec.vmrk\ndatafile = {out}/sentinel.eeg", "", None),  # duplicate key
])
@pytest.mark.parametrize("given", ["uploads", "beside"])
def test_a_header_never_makes_the_reader_open_another_file(sentinel, data_line, marker_line, comment, where, given):
    outside, uploads = sentinel
    fill = {"out": str(outside)}
    path = _header(uploads, data_line.format(**fill), marker_line.format(**fill), comment)
    companions = [uploads / "rec.eeg", uploads / "rec.vmrk"] if given == "uploads" else None
    with pytest.raises(ValueError) as err:
        read_trial(path, companions=companions)
    text = str(err.value)
    assert "'rec.vhdr'" in text
    if where is None:  # MNE's parser refuses a key given twice in one section: so do we, before reading
        assert "Could not read 'rec.vhdr' as BrainVision" in text and "datafile" in text
    else:
        assert where in text and "expected the bare name of a file given with it" in text
    assert str(outside) not in text.replace(fill["out"] + "/sentinel", "") or where


def test_a_symlink_among_the_uploads_is_refused(sentinel, smooth_trial):
    outside, uploads = sentinel
    path = _header(uploads, "DataFile=rec.eeg", "MarkerFile=rec.vmrk")
    (uploads / "rec.eeg").unlink()
    (uploads / "rec.eeg").symlink_to(outside / "sentinel.eeg")
    with pytest.raises(ValueError, match="'rec.eeg' is a symbolic link: expected the file itself"):
        read_trial(path, companions=[uploads / "rec.eeg", uploads / "rec.vmrk"])


def test_an_eeglab_set_naming_another_data_file_is_refused(sentinel, smooth_trial):
    import scipy.io

    outside, uploads = sentinel
    (outside / "sentinel.fdt").write_bytes(smooth_trial.data.astype(np.float32).T.tobytes())  # would decode
    SENTINEL_OPENS.clear()  # writing it was the test's own open
    write_trial(smooth_trial, uploads / "rec.set")
    mat = {k: v for k, v in scipy.io.loadmat(uploads / "rec.set").items() if not k.startswith("__")}
    for reference, message in ((str(outside / "sentinel.fdt"), "names data="),
                               ("../outside/sentinel.fdt", "names data='../outside/sentinel.fdt'"),
                               ("sentinel.fdt", "names 'sentinel.fdt', which is not among the files given")):
        scipy.io.savemat(uploads / "rec.set", {**mat, "data": reference}, appendmat=False)
        with pytest.raises(ValueError, match=re.escape(message)):
            read_trial(uploads / "rec.set", companions=[])
    # the same with its own .fdt given: read, and it is the data of that file
    (uploads / "rec.fdt").write_bytes(smooth_trial.data.astype(np.float32).T.tobytes())
    scipy.io.savemat(uploads / "rec.set", {**mat, "data": "rec.fdt"}, appendmat=False)
    back = read_trial(uploads / "rec.set", companions=[uploads / "rec.fdt"])
    np.testing.assert_allclose(back.data, smooth_trial.data.astype(np.float32) * 1e-6, rtol=1e-5)


def test_a_split_fif_is_refused(tmp_path, smooth_trial):
    import mne

    from neuroimagen.data.montage import make_info

    raw = mne.io.RawArray(np.tile(smooth_trial.data, (1, 40)), make_info(), verbose="error")
    raw.save(tmp_path / "long_raw.fif", split_size="10MB", verbose="error")
    parts = sorted(tmp_path.glob("long_raw*.fif"))
    assert len(parts) >= 2
    for part in parts:  # the first names its next part, the others their previous one
        with pytest.raises(ValueError, match=rf"'{part.name}' is one part of a split FIF recording") as err:
            read_trial(part)
        assert str(tmp_path) not in str(err.value)


def test_uploads_in_separate_folders_are_read_and_their_header_rewritten(tmp_path, smooth_trial):
    """Gradio stores each upload in its own folder: the header's bare names are matched to the given files;
    keys in any case work, as in MNE."""
    write_trial(smooth_trial, tmp_path / "orig" / "rec.vhdr")
    text = (tmp_path / "orig" / "rec.vhdr").read_text().replace("DataFile=", "DATAFILE=")
    files = []
    for k, name in enumerate(("rec.vhdr", "rec.eeg", "rec.vmrk")):
        (tmp_path / f"u{k}").mkdir()
        src = tmp_path / "orig" / name
        files.append(tmp_path / f"u{k}" / name)
        files[-1].write_bytes(text.encode() if name == "rec.vhdr" else src.read_bytes())
    back = read_trial(files[0], companions=files[1:])
    np.testing.assert_allclose(back.data, smooth_trial.data, atol=1e-9)
    with pytest.raises(ValueError, match=r"Got 'other.npz' with 'rec.vhdr', which names 'rec.eeg', 'rec.vmrk'"):
        read_trial(files[0], companions=[*files[1:], tmp_path / "other.npz"])
    with pytest.raises(ValueError, match="'rec.vhdr' names 'rec.vmrk', which is not among the files given"):
        read_trial(files[0], companions=files[1:2])


def test_the_guard_refuses_other_files_in_its_thread_only(tmp_path):
    import threading

    from neuroimagen.data.companions import OutsideFileRefused, only_these_files

    given, other = tmp_path / "given.txt", tmp_path / "other.txt"
    given.write_text("a")
    other.write_text("b")
    seen = []
    with only_these_files([given]) as refused:
        assert given.read_text() == "a"
        with pytest.raises(OutsideFileRefused):
            other.read_text()
        thread = threading.Thread(target=lambda: seen.append(other.read_text()))  # another request's thread
        thread.start()
        thread.join()
    assert refused == ["other.txt"] and seen == ["b"]
    assert other.read_text() == "b"  # and nothing is refused once outside


# ---------------------------------------------------------------- memory and metadata
def test_sizes_are_checked_in_float32_before_converting(tmp_path, monkeypatch, model_names):
    import neuroimagen.data.io as io

    monkeypatch.setattr(io, "MAX_TRIAL_BYTES", 128 * 1000 * 4 - 1)  # one sample short of a 128 x 1000 trial
    data = np.zeros((128, 1000), np.int8)
    np.save(tmp_path / "a.npy", data)
    torch.save({"data": torch.zeros(128, 1000, dtype=torch.int8)}, tmp_path / "a.pth")
    np.savez(tmp_path / "a.npz", data=data)
    for ext in (".npy", ".pth", ".npz"):
        with pytest.raises(ValueError, match=rf"'a{ext}' holds 128,000 EEG samples \(128 x 1,000\): 0 MB as float32"):
            read_trial(tmp_path / f"a{ext}")
    monkeypatch.setattr(io, "MAX_TRIAL_BYTES", 128 * 1000 * 4)
    assert read_trial(tmp_path / "a.npz").data.dtype == np.float32  # the dtype trials are computed in


@pytest.mark.parametrize("field, value, message", [
    ("label", 40, "Invalid 'label' in 't.npz': expected a class index (neuroimagen.data.classes.CLASSES) from 0 to 39, "
                  "got 40."),
    ("label", -1, "got -1."),
    ("label", 2.5, "got 2.5."),
    ("subject", -3, "Invalid 'subject' in 't.npz': expected a subject number >= 0, got -3."),
    ("stimulus", np.zeros((8, 8), np.uint8), "got shape (8, 8) of dtype uint8."),
    ("stimulus", np.full((4, 4, 3), 300.0), "expected values 0-255, got values from 300.0 to 300.0."),
    ("stimulus", np.zeros((5000, 1, 3), np.uint8), "of 1 to 4096 pixels a side"),
])
def test_trial_metadata_is_validated_not_dropped(tmp_path, smooth_trial, field, value, message):
    np.savez(tmp_path / "t.npz", data=smooth_trial.data, **{field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        read_trial(tmp_path / "t.npz")


@pytest.mark.parametrize("target", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_every_pickled_call_is_refused_as_code_without_torchs_advice(tmp_path, target, legacy):
    import importlib

    module, name = target.split(".")

    class Call:
        def __reduce__(self):
            return getattr(importlib.import_module(module), name), ("true",)

    path = tmp_path / "evil.pth"
    torch.save({"data": torch.zeros(128, 500), "x": Call()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError) as err:
        read_trial(path)
    text = str(err.value)
    assert text.startswith("Refused to load 'evil.pth'") and "could run code" in text, text
    assert name in text  # names what it would have called
    assert "weights_only" not in text and "trusted source" not in text  # never torch's advice to load it anyway
