"""THINGS-EEG2: files written exactly as the data set's code writes them (smaller first dimensions) read back as
written; files that would run code are refused without running it; wrong files say what was expected."""

from __future__ import annotations

import os
import pickle
import re
import subprocess

import numpy as np
import pytest

from neuroimagen.data import DataFileError, ThingsEEG2Dataset, load_pickled, load_things_eeg2

# The 17 channels of the official files ('^O *|^P *' of the 63), in the files' order
POSTERIOR = ["P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2"]
ALL_63 = ["Fp1", "Fp2", "AF7", "AF3", "AFz", "AF4", "AF8", "F7", "F5", "F3", "F1", "F2", "F4", "F6", "F8", "FT9",
          "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8", "FT10", "T7", "C5", "C3", "C1", "Cz", "C2",
          "C4", "C6", "T8", "TP9", "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8", "TP10", *POSTERIOR]
TRAIN_CONCEPTS = ["00001_aardvark", "00018_air_conditioner"]  # 2 concepts x 10 images (the real set: 1654 x 10)
TEST_CONCEPTS = ["00001_aircraft_carrier", "00002_antelope", "00003_backscratcher", "00004_balance_beam",
                 "00005_banana", "00006_barbecue"]  # 6 concepts x 1 image (the real set: 200)
N_TRAIN_REPS, N_TEST_REPS = 4, 80


def _mne_times(tmin: float, n: int, sfreq: float) -> np.ndarray:
    return tmin + np.arange(n) / sfreq  # what epochs.times holds after epochs.resample(sfreq)


def _eeg_dict(rng, n_images, n_reps, ch_names, n_times, times):
    # save_prepr: np.zeros(...) filled per condition, so float64; ch_names is MNE's list; times epochs.times
    data = rng.standard_normal((n_images, n_reps, len(ch_names), n_times))
    return {"preprocessed_eeg_data": data, "ch_names": list(ch_names), "times": times}


def _metadata():
    train_files = [f"{c.split('_', 1)[1]}_{k:02d}{'bsn'[k % 3]}.jpg" for c in TRAIN_CONCEPTS for k in range(1, 11)]
    test_files = [f"{c.split('_', 1)[1]}_{k:02d}s.jpg" for k, c in enumerate(TEST_CONCEPTS, 6)]
    return {"train_img_concepts": [c for c in TRAIN_CONCEPTS for _ in range(10)],
            "train_img_concepts_THINGS": [c for c in TRAIN_CONCEPTS for _ in range(10)],
            "train_img_files": train_files,
            "test_img_concepts": np.array(TEST_CONCEPTS), "test_img_concepts_THINGS": np.array(TEST_CONCEPTS),
            "test_img_files": np.array(test_files)}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The OSF layout: preprocessed data of 2 subjects (np.save'd dicts) and image_metadata.npy beside them."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("things") / "preprocessed_data"
    stored = {}
    times = _mne_times(-0.2, 100, 100.0)
    for sub in (1, 2):
        (root / f"sub-{sub:02d}").mkdir(parents=True)
        for split, n_images, n_reps in (("training", 20, N_TRAIN_REPS), ("test", 6, N_TEST_REPS)):
            d = _eeg_dict(rng, n_images, n_reps, POSTERIOR, 100, times)
            np.save(root / f"sub-{sub:02d}" / f"preprocessed_eeg_{split}.npy", d)
            stored[sub, split] = d
    np.save(root / "image_metadata.npy", _metadata())
    return root, stored


@pytest.fixture(scope="module")
def nice(tmp_path_factory):
    """The 250 Hz re-preprocessing (NICE, read by ATM): pickle.dump(protocol=4) into the .npy names, 63 channels,
    data from 0 s (data[..., 50:]) while 'times' keeps the 300 values from -0.2 s."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("nice") / "Preprocessed_data_250Hz"
    (root / "sub-01").mkdir(parents=True)
    d = _eeg_dict(rng, 6, N_TEST_REPS, ALL_63, 250, _mne_times(-0.2, 300, 250.0))
    with open(root / "sub-01" / "preprocessed_eeg_test.npy", "wb") as f:
        pickle.dump(d, f, protocol=4)
    return root, d


# ------------------------------------------------------------------------------------------------ reading
def test_official_training_file_reads_as_written(official):
    root, stored = official
    ds = load_things_eeg2(root, 2, "training")
    d = stored[2, "training"]
    assert isinstance(ds, ThingsEEG2Dataset) and ds.info["format"] == "np.save"
    np.testing.assert_array_equal(ds.data, d["preprocessed_eeg_data"])
    assert ds.data.dtype == np.float64 and ds.data.shape == (20, 4, 17, 100)
    assert ds.ch_names == POSTERIOR and ds.sfreq == 100.0 and ds.tmin == pytest.approx(-0.2)
    np.testing.assert_array_equal(ds.times, d["times"])
    assert (ds.n_images, ds.n_repetitions, ds.n_chans, ds.n_times, ds.n_averaged) == (20, 4, 17, 100, 1)

    # trials image by image, each with its repetition, concept and image file
    assert len(ds) == 80 and ds.eeg.shape == (80, 17, 100)
    np.testing.assert_array_equal(ds.eeg[4 * 13 + 2], d["preprocessed_eeg_data"][13, 2])
    assert list(ds.image_index[:9]) == [0, 0, 0, 0, 1, 1, 1, 1, 2] and list(ds.repetition[:6]) == [0, 1, 2, 3, 0, 1]
    assert ds.concepts[39] == "00001_aardvark" and ds.concepts[40] == "00018_air_conditioner"
    assert ds.trial_image_files[:5] == ["00001_aardvark/aardvark_01s.jpg"] * 4 + ["00001_aardvark/aardvark_02n.jpg"]
    assert ds.concept_names[19] == "air conditioner"
    item = ds[4 * 13 + 2]
    np.testing.assert_array_equal(item["eeg"], d["preprocessed_eeg_data"][13, 2])
    assert (item["image"], item["repetition"], item["concept"], item["image_file"]) == (
        13, 2, "00018_air_conditioner", "00018_air_conditioner/air_conditioner_04s.jpg")
    assert ds.image_path(13, "/data/image_set").as_posix() == \
        "/data/image_set/training_images/00018_air_conditioner/air_conditioner_04s.jpg"
    with pytest.raises(IndexError, match="Trial 80 out of range: this dataset has 80 trials"):
        ds[80]


def test_test_split_averaged_over_repetitions(official):
    root, stored = official
    ds = load_things_eeg2(root, 1, "test", average_repetitions=True)
    stored_data = stored[1, "test"]["preprocessed_eeg_data"]
    assert ds.data.shape == (6, 1, 17, 100) and ds.n_averaged == N_TEST_REPS and len(ds) == 6
    np.testing.assert_allclose(ds.eeg, stored_data.mean(axis=1), rtol=1e-12)
    assert ds.concepts == TEST_CONCEPTS and list(ds.repetition) == [0] * 6
    assert ds.trial_image_files[4] == "00005_banana/banana_10s.jpg"
    assert ds.image_path(4, "set").as_posix() == "set/test_images/00005_banana/banana_10s.jpg"
    single = load_things_eeg2(root, 1, "test")  # every repetition a trial
    assert single.data.shape == (6, 80, 17, 100) and len(single) == 480


def test_metadata_is_optional_and_can_live_elsewhere(official, tmp_path):
    root, _ = official
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "preprocessed_eeg_test.npy").write_bytes((root / "sub-01" / "preprocessed_eeg_test.npy")
                                                                   .read_bytes())
    bare = load_things_eeg2(tmp_path, 1, "test")
    assert bare.concepts is None and bare.image_files is None and bare.info["metadata"] is None
    with pytest.raises(ValueError, match="loaded without image_metadata.npy: pass image_metadata="):
        bare.image_path(0, "set")
    ds = load_things_eeg2(tmp_path, 1, "test", image_metadata=root / "image_metadata.npy")
    assert ds.concepts[:80] == ["00001_aircraft_carrier"] * 80


def test_files_pickled_by_numpy_1_read_the_same(official, tmp_path):
    # numpy 1.x's np.save pickles with protocol 3 and names numpy.core.multiarray (numpy 2: numpy._core)
    root, stored = official
    raw = (root / "sub-01" / "preprocessed_eeg_test.npy").read_bytes()
    header_end = 10 + int.from_bytes(raw[8:10], "little")  # .npy version 1.0: magic, version, header length
    array = np.empty((), dtype=object)
    array[()] = stored[1, "test"]
    payload = pickle.dumps(array, protocol=3).replace(b"numpy._core.", b"numpy.core.")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    old = raw[:header_end] + payload
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "preprocessed_eeg_test.npy").write_bytes(old)
    ds = load_things_eeg2(tmp_path, 1, "test")
    np.testing.assert_array_equal(ds.data, stored[1, "test"]["preprocessed_eeg_data"])


def test_250hz_63_channel_variant(nice):
    root, d = nice
    ds = load_things_eeg2(root, 1, "test", average_repetitions=True)
    assert ds.info["format"] == "pickle" and ds.ch_names == ALL_63 and ds.sfreq == 250.0
    assert ds.data.shape == (6, 1, 63, 250) and ds.n_times == 250
    np.testing.assert_allclose(ds.times, d["times"][50:])
    assert ds.tmin == pytest.approx(0.0, abs=1e-12) and ds.times[-1] == pytest.approx(0.996)
    assert "the data start at 0 s" in ds.info["times"]
    np.testing.assert_allclose(ds.eeg, d["preprocessed_eeg_data"].mean(axis=1), rtol=1e-12)


@pytest.mark.parametrize("protocol", range(6))
def test_pkl_files_of_any_protocol(tmp_path, protocol):
    d = _eeg_dict(np.random.default_rng(2), 3, 2, ALL_63, 250, _mne_times(0.0, 250, 250.0))
    d["subject"], d["sfreq"], d["shape"] = "sub-01", np.float64(250.0), (3, 2)
    d["other"] = [b"", b"\x00\xff", bytearray(b"ab"), {1, 2}, frozenset({"a"}), 1 + 2j, np.array(["ab", "c"]),
                  np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array([None, [1], "x"], dtype=object)]
    with open(tmp_path / "sub-01.pkl", "wb") as f:
        pickle.dump(d, f, protocol=protocol)
    back = load_pickled(tmp_path / "sub-01.pkl")
    assert set(back) == set(d) and back["ch_names"] == ALL_63 and back["shape"] == (3, 2)
    np.testing.assert_array_equal(back["preprocessed_eeg_data"], d["preprocessed_eeg_data"])
    assert back["sfreq"] == 250.0 and isinstance(back["sfreq"], np.float64)
    assert back["other"][:6] == d["other"][:6] and [type(x) for x in back["other"]] == [type(x) for x in d["other"]]
    np.testing.assert_array_equal(back["other"][6], d["other"][6])
    np.testing.assert_array_equal(back["other"][7], d["other"][7])
    assert back["other"][8].tolist() == [None, [1], "x"]
    (tmp_path / "array.pkl").write_bytes(pickle.dumps(np.arange(3.0), protocol=protocol))  # p0/1 start with GLOBAL
    np.testing.assert_array_equal(load_pickled(tmp_path / "array.pkl"), np.arange(3.0))


# ------------------------------------------------------------------------------------------------ refusing code
class _Payload:
    """Runs ``call(*args)`` when unpickled, like any pickle whose __reduce__ names a function."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _touch(marker):
    return {"os.system": _Payload(os.system, f"touch {marker}"),
            "eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
            # a function inside numpy that executes a string: numpy is allowed by name, not as a module
            "numpy runstring": _Payload(np.testing._private.utils.runstring,
                                        f"open({str(marker)!r}, 'w').close()", {})}


def _write(path, obj, how):
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "np.save":
        np.save(path, obj, allow_pickle=True)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=4)


def test_the_payloads_do_run_code_when_loaded_unsafely(tmp_path):
    # what np.load(allow_pickle=True) -- the loading every peer's README gives -- does with these files
    for k, (name, payload) in enumerate(_touch(tmp_path / "ran").items()):
        _write(tmp_path / f"{k}.npy", {"preprocessed_eeg_data": payload}, "np.save")
        np.load(tmp_path / f"{k}.npy", allow_pickle=True)
        if name == "subprocess.Popen":
            import time

            for _ in range(100):  # the child process touches the file
                if (tmp_path / "ran").exists():
                    break
                time.sleep(0.05)
        assert (tmp_path / "ran").exists(), name
        (tmp_path / "ran").unlink()


@pytest.mark.parametrize("how", ["np.save", "pickle"])
@pytest.mark.parametrize("call", ["os.system", "eval", "subprocess.Popen", "numpy runstring"])
def test_code_carrying_files_are_refused_unrun(tmp_path, how, call):
    marker = tmp_path / "ran"
    payload = _touch(marker)[call]
    root = tmp_path / "data"
    d = _eeg_dict(np.random.default_rng(3), 2, 2, POSTERIOR, 100, _mne_times(-0.2, 100, 100.0))
    _write(root / "sub-01" / "preprocessed_eeg_test.npy", {**d, "ch_names": payload}, how)
    found = {"os.system": r"(posix|os|nt)\.system", "eval": r"builtins\.eval", "subprocess.Popen": r"subprocess\.Popen",
             "numpy runstring": r"numpy\.testing\._private\.utils\.runstring"}[call]
    msg = (f"Refused to load 'preprocessed_eeg_test.npy': its pickle names {found}, but only numpy arrays, dtypes "
           f"and scalars, dicts, lists, tuples, strings, bytes, numbers, booleans and None are allowed")
    with pytest.raises(DataFileError, match=msg):
        load_things_eeg2(root, 1, "test")
    with pytest.raises(DataFileError, match="Nothing in the file was called"):
        load_pickled(root / "sub-01" / "preprocessed_eeg_test.npy")

    # the metadata and a .pkl go through the same door
    np.save(root / "sub-01" / "preprocessed_eeg_test.npy", {**d, "preprocessed_eeg_data": np.zeros((6, 2, 17, 100))})
    meta = _metadata()
    meta["test_img_files"] = payload
    _write(root / "image_metadata.npy", meta, how)
    with pytest.raises(DataFileError, match=msg.replace("preprocessed_eeg_test", "image_metadata")):
        load_things_eeg2(root, 1, "test", image_metadata=root / "image_metadata.npy")
    _write(tmp_path / "sub-01.pkl", [payload], "pickle")
    with pytest.raises(DataFileError, match=msg.replace("preprocessed_eeg_test.npy", "sub-01.pkl")):
        load_pickled(tmp_path / "sub-01.pkl")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ wrong files
def _one(tmp_path, d, split="test"):
    (tmp_path / "sub-01").mkdir(exist_ok=True)
    np.save(tmp_path / "sub-01" / f"preprocessed_eeg_{split}.npy", d)
    return tmp_path


def test_missing_folders_and_files_say_what_is_there(official, tmp_path):
    root, _ = official
    with pytest.raises(FileNotFoundError, match=r"No subject folder 'sub-03' in .*: it holds sub-01, sub-02\. "
                                                "Expected the folder of the preprocessed data"):
        load_things_eeg2(root, 3, "test")
    with pytest.raises(FileNotFoundError, match="No subject folder 'sub-01' in .*: it holds no sub-XX folders"):
        load_things_eeg2(root / "sub-01", 1, "test")  # a subject's folder given for the data set's
    with pytest.raises(FileNotFoundError, match="No THINGS-EEG2 folder at .*nowhere: expected the folder holding "
                                                "sub-01 ... sub-10"):
        load_things_eeg2(tmp_path / "nowhere", 1)
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "preprocessed_eeg_test.npy").touch()
    with pytest.raises(FileNotFoundError, match="No 'preprocessed_eeg_training.npy' in .*sub-01: expected "
                                                "preprocessed_eeg_training.npy and preprocessed_eeg_test.npy, "
                                                "found \\['preprocessed_eeg_test.npy'\\]"):
        load_things_eeg2(tmp_path, 1, "training")
    with pytest.raises(FileNotFoundError, match="No image metadata file at .*image_metadata.npy"):
        load_things_eeg2(root, 1, "test", image_metadata=tmp_path / "image_metadata.npy")


def test_missing_keys_and_non_dicts(tmp_path):
    d = _eeg_dict(np.random.default_rng(4), 2, 3, POSTERIOR, 100, _mne_times(-0.2, 100, 100.0))
    root = _one(tmp_path, {k: v for k, v in d.items() if k != "times"})
    with pytest.raises(DataFileError, match="'preprocessed_eeg_test.npy' has no 'times': expected THINGS-EEG2 "
                                            "preprocessed EEG with keys 'preprocessed_eeg_data', 'ch_names', "
                                            "'times', found 'ch_names', 'preprocessed_eeg_data'"):
        load_things_eeg2(root, 1, "test")
    _one(tmp_path, d["preprocessed_eeg_data"])  # the array alone, not the dict
    with pytest.raises(DataFileError, match=r"'preprocessed_eeg_test.npy' is not THINGS-EEG2 preprocessed EEG: "
                                            r"expected a dict with keys .*, got an array of shape \(2, 3, 17, 100\)"):
        load_things_eeg2(root, 1, "test")


@pytest.mark.parametrize("change, message", [
    ({"preprocessed_eeg_data": np.zeros((2, 17, 100))},  # repetitions averaged away before saving
     r"Invalid 'preprocessed_eeg_data' in 'preprocessed_eeg_test.npy': expected a float array \(image conditions, "
     r"repetitions, channels, times\), e.g. \(200, 80, 17, 100\) for test, got shape \(2, 17, 100\), dtype float64"),
    ({"preprocessed_eeg_data": np.zeros((2, 3, 17, 100), np.int16)}, r"got shape \(2, 3, 17, 100\), dtype int16"),
    ({"preprocessed_eeg_data": [[0.0]]}, r"\(200, 80, 17, 100\) for test, got a list"),
    ({"ch_names": POSTERIOR[:16]}, r"Invalid 'ch_names' in 'preprocessed_eeg_test.npy': expected one name per "
                                   r"channel of 'preprocessed_eeg_data' \(17\), got 16"),
    ({"ch_names": [*POSTERIOR[:16], 17]}, r"Invalid 'ch_names' .*got a list holding int 17"),
    ({"times": _mne_times(-0.2, 99, 100.0)}, r"Invalid 'times' in 'preprocessed_eeg_test.npy': expected one time "
                                             r"per sample of 'preprocessed_eeg_data' \(100\), .* got 99 values from "
                                             r"-0.200 to 0.780 s"),
    ({"times": _mne_times(0.1, 120, 100.0)}, r"got 120 values from 0.100 to 1.290 s"),  # 20 more, none before 0
    ({"times": np.r_[_mne_times(-0.2, 99, 100.0), 5.0]}, r"expected evenly spaced increasing times"),
    ({"times": "-0.2:0.8"}, r"Invalid 'times' .*got a str"),
    ({"times": np.zeros(0)}, r"Invalid 'times' .*one per sample \(100\), got shape \(0,\), dtype float64"),
])
def test_wrong_contents_say_what_was_expected(tmp_path, change, message):
    d = _eeg_dict(np.random.default_rng(5), 2, 3, POSTERIOR, 100, _mne_times(-0.2, 100, 100.0))
    root = _one(tmp_path, {**d, **change})
    with pytest.raises(DataFileError, match=message):
        load_things_eeg2(root, 1, "test")


def test_metadata_of_another_split_or_layout(official, tmp_path):
    root, _ = official
    meta = _metadata()
    meta["test_img_concepts"] = meta["train_img_concepts"]
    meta["test_img_files"] = meta["train_img_files"]  # the training list where the test list belongs
    np.save(tmp_path / "image_metadata.npy", meta)
    with pytest.raises(DataFileError, match="'image_metadata.npy' lists 20 test images, but "
                                            "'preprocessed_eeg_test.npy' holds 6 image conditions: expected one "
                                            "metadata entry per row"):
        load_things_eeg2(root, 1, "test", image_metadata=tmp_path / "image_metadata.npy")
    del meta["test_img_files"]
    np.save(tmp_path / "image_metadata.npy", meta)
    with pytest.raises(DataFileError, match="'image_metadata.npy' has no 'test_img_files': expected THINGS-EEG2 "
                                            "image metadata"):
        load_things_eeg2(root, 1, "test", image_metadata=tmp_path / "image_metadata.npy")


def test_corrupt_files(official, tmp_path):
    root, _ = official
    raw = (root / "sub-01" / "preprocessed_eeg_test.npy").read_bytes()
    (tmp_path / "sub-01").mkdir()
    target = tmp_path / "sub-01" / "preprocessed_eeg_test.npy"
    target.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match="Could not read 'preprocessed_eeg_test.npy' as NumPy array: .*The file "
                                            "may be truncated or corrupt."):
        load_things_eeg2(tmp_path, 1, "test")
    target.write_bytes(b"PK\x03\x04 a zip, say")
    with pytest.raises(DataFileError, match=re.escape("expected an .npy file (starting with b'\\x93NUMPY') or a "
                                                      "pickle (starting with b'\\x80'), got a file starting with "
                                                      "b'PK\\x03\\x04 a'")):
        load_things_eeg2(tmp_path, 1, "test")


def test_arguments_are_checked(official):
    root, _ = official
    with pytest.raises(ValueError, match="Allowed values are 'training' and 'test', but got 'train' instead"):
        load_things_eeg2(root, 1, "train")
    with pytest.raises(ValueError, match="'subject' parameter: expected a number in \\[1, inf\\], got 0"):
        load_things_eeg2(root, 0)
    with pytest.raises(TypeError, match="subject must be an instance of int, got str instead"):
        load_things_eeg2(root, "sub-01")
    with pytest.raises(TypeError, match="average_repetitions must be an instance of bool, got str"):
        load_things_eeg2(root, 1, average_repetitions="yes")


@pytest.mark.parametrize("stream, reason", [
    # BUILD on an allowed callable (setting its attributes for later loads): it has none to set
    (b"\x80\x02cnumpy._core.numeric\n_frombuffer\nN}X\x01\x00\x00\x00xK\x01s\x86b.", "has no attribute 'x'"),
    # numpy's _reconstruct asked for another type than ndarray
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85C\x01b\x87R.",
     "only numpy.ndarray is allowed"),
    # a codec other than latin-1 for protocol 2's bytes
    (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.", "only 'latin1' is allowed"),
])
def test_allowed_callables_cannot_be_changed_or_misused(tmp_path, stream, reason):
    (tmp_path / "x.pkl").write_bytes(stream)
    with pytest.raises(DataFileError, match=f"Could not read 'x.pkl' as a pickle: .*{reason}.*truncated or corrupt"):
        load_pickled(tmp_path / "x.pkl")
    d = {"a": np.arange(3.0), "b": b"\xff"}
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(d, protocol=5))
    assert load_pickled(tmp_path / "ok.pkl")["b"] == b"\xff"  # the callables still work after the attempt


# ------------------------------------------------------------------------------------------------ refusing bad numpy state
# Only numpy's own names, but states that numpy's __setstate__ trusts: pickle.loads of these crashes Python.
_RECONSTRUCT = (np._core.multiarray if hasattr(np, "_core") else np.core.multiarray)._reconstruct


class _DTypeState:
    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return np.dtype, (self.spec, False, True), self.state


class _ArrayState:
    def __init__(self, *state):
        self.state = state

    def __reduce__(self):
        return _RECONSTRUCT, (np.ndarray, (0,), b"b"), self.state


NO_FLAGS_OBJECT = _DTypeState("O8", (3, "|", None, None, None, -1, -1, 0))  # an object dtype that says it holds none
BAD_STATES = {
    "raw bytes as object pointers": (_ArrayState(1, (2,), NO_FLAGS_OBJECT, False, b"A" * 16),
                                     r"an object array of shape \(2,\) \(2 items\) with a bytes"),
    "a short list for an object array": (_ArrayState(1, (100000,), np.dtype("O"), False, [1]),
                                         r"an object array of shape \(100000,\) \(100000 items\) with 1 items"),
    "too few bytes": (_ArrayState(1, (10,), np.dtype("f8"), False, b"x"),
                      r"an array of shape \(10,\), float64 \(80 bytes\) with 1 bytes"),
    "a structured dtype": (np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), r"dtype 'V12': only booleans, integers"),
    "a dtype with fields in its state": (_DTypeState("f8", (3, "<", None, ("a",), {"a": (np.dtype("f8"), 8)}, -1, -1,
                                                            0)), r"dtype 'f8' with fields or subarrays: only booleans"),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_numpy_states_that_would_corrupt_memory_are_refused(tmp_path, case):
    obj, reason = BAD_STATES[case]
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"preprocessed_eeg_data": obj}, protocol=4))
    with pytest.raises(DataFileError, match=f"Could not read 'x.pkl' as a pickle: {reason}"):
        load_pickled(tmp_path / "x.pkl")


def test_those_states_do_crash_plain_unpickling(tmp_path):
    import sys

    for case in ("raw bytes as object pointers", "a short list for an object array"):
        path = tmp_path / "x.pkl"
        path.write_bytes(pickle.dumps(BAD_STATES[case][0], protocol=4))
        code = f"import pickle; a = pickle.load(open({str(path)!r}, 'rb')); print(repr(a[:2]))"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
        assert run.returncode < 0, (case, run.returncode, run.stdout[-200:])  # killed by a signal (SIGSEGV)


def test_length_and_index_fields_cannot_make_the_reader_allocate(tmp_path):
    # A few bytes that ask for gigabytes: a memo index of 2e9 (the C unpickler sizes its memo by it: 16 GB) and a
    # bytearray of 1 TB. Run under a 2 GB address-space limit, so that a regression fails instead of swapping.
    import struct
    import sys

    (tmp_path / "memo.pkl").write_bytes(b"\x80\x04N" + b"r" + struct.pack("<I", 2_000_000_000) + b".")
    (tmp_path / "big.pkl").write_bytes(b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"x" * 16 + b".")
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from neuroimagen.data import DataFileError, load_pickled
print(load_pickled({str(tmp_path / "memo.pkl")!r}))
try:
    load_pickled({str(tmp_path / "big.pkl")!r})
except DataFileError as err:
    print(err)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.splitlines() == ["None", "Could not read 'big.pkl' as a pickle: BYTEARRAY8 of 1099511627776 "
                                               "bytes, more than the file holds. The file may be truncated or corrupt."]
