"""Write the bad-input corpus: small files that ``read_trial`` + ``preprocess`` must refuse (or accept) with a
clear message, plus ``manifest.json`` with the message each one must give.

    python scripts/make_bad_inputs.py                 # -> tests/data/bad/
    python scripts/make_bad_inputs.py --out DIR

``tests/test_io.py`` feeds every file through ``preprocess(read_trial(path))`` and checks the manifest:
``{"file": {"ok": false, "message": "..."}}`` (a substring of the ValueError) or ``{"ok": true, "info": "..."}``
(a substring of ``repr(trial.info)`` after preprocessing). The malicious pickle is not in the corpus: the
test builds it in a temporary folder. Deterministic (seeded); the folder stays well under 2 MB.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "bad"
SEED = 0


def smooth_eeg(n_times: int = 500, sfreq: float = 1000.0, seed: int = SEED) -> np.ndarray:
    """(128, n_times) spatially smooth signals in microvolts (sinusoids weighted by electrode position)."""
    from neuroimagen.data.montage import make_info

    pos = np.array([ch["loc"][:3] for ch in make_info()["chs"]])
    pos = (pos - pos.mean(0)) / pos.std(0)
    t = np.arange(n_times) / sfreq
    rng = np.random.default_rng(seed)
    waves = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (7.0, 11.0, 23.0)])
    return 10.0 * (pos @ waves) + 0.5 * rng.standard_normal((128, n_times))


def names() -> list[str]:
    from neuroimagen.data.montage import model_ch_names

    return list(model_ch_names())


def save_npz(path: Path, data: np.ndarray, ch_names=None, sfreq=1000.0, **extra) -> None:
    """A trial as users save it; float16 in microvolts keeps the corpus small."""
    fields = {"data": data.astype(np.float16) if data.dtype.kind == "f" else data, **extra}
    if ch_names is not None:
        fields["ch_names"] = np.array(ch_names)
    if sfreq is not None:
        fields["sfreq"] = sfreq
    np.savez_compressed(path, **fields)


def tiled(n_times: int = 500) -> np.ndarray:
    """Cheap (128, n_times) signal (compresses to nothing) for files refused before their values matter."""
    return np.tile(np.sin(np.arange(n_times) / 7.0), (128, 1))


def _write_mne(path: Path, data_uv: np.ndarray, ch_names: list[str], sfreq: float) -> None:
    from neuroimagen.data import EEGTrial, write_trial

    write_trial(EEGTrial(data_uv * 1e-6, sfreq, ch_names), path)


# ------------------------------------------------------------------------------------------------ the cases
def _bytes(content: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(content)


def _truncated(ext: str, keep: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        _write_mne(p, smooth_eeg()[:, :500], names(), 1000.0)
        p.write_bytes(p.read_bytes()[:keep])

    return make


def _npy(arr: np.ndarray) -> Callable[[Path], None]:
    return lambda p: np.save(p, arr)


def _nan(p: Path) -> None:
    d = tiled()
    d[3, 10] = np.nan  # F7
    save_npz(p, d, names())


def _inf(p: Path) -> None:
    d = tiled()
    d[[0, 1], 5:8] = np.inf
    save_npz(p, d, names())


def _flat(n_flat: int) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        d = smooth_eeg() if n_flat < 17 else tiled()
        d[:n_flat] = 0.0
        save_npz(p, d, names())

    return make


def _subset(drop: list[str]) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        keep = [k for k, n in enumerate(names()) if n not in drop]
        save_npz(p, smooth_eeg()[keep], [names()[k] for k in keep])

    return make


def _too_few(p: Path) -> None:
    ch = [f"Ch{k + 1}" for k in range(122)] + ["Cz", "Pz", *names()[:4]]  # 6 placeable names
    save_npz(p, tiled(), ch)


def _no_eeg(p: Path) -> None:
    import mne

    info = mne.create_info(["ECG", "STI 014"], 1000.0, ["ecg", "stim"])
    mne.io.RawArray(np.zeros((2, 500)), info, verbose="error").save(p, overwrite=True, verbose="error")


def _whole_dataset(p: Path) -> None:
    from neuroimagen.data import save_eeg_imagenet

    save_eeg_imagenet(p, [np.zeros((128, 4), np.float16)] * 2, [0, 1], [0, 1], [1, 1], images=["a_1", "b_1"])


def _torch_obj(obj) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        import torch

        torch.save(obj, p)

    return make


def _object_npy(p: Path) -> None:
    np.save(p, np.array([{"data": [1, 2, 3]}], dtype=object), allow_pickle=True)


def vhdr_text(data_line: str, marker_line: str, comment: str = "") -> str:
    """A one-channel BrainVision header with the given ``DataFile=`` / ``MarkerFile=`` lines (any case, any value)."""
    return ("Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\nCodepage=UTF-8\n"
            f"{data_line}\n{marker_line}\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\nNumberOfChannels=1\n"
            "SamplingInterval=1000\n[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n[Channel Infos]\nCh1=Cz,,0.1,uV\n"
            + (f"[Comment]\n{comment}\n" if comment else ""))


def _lonely_vhdr(p: Path) -> None:
    p.write_text(vhdr_text(f"DataFile={p.stem}.eeg", f"MarkerFile={p.stem}.vmrk"))


def _vhdr(data_line: str, marker_line: str, comment: str = "") -> Callable[[Path], None]:
    return lambda p: p.write_text(vhdr_text(data_line, marker_line, comment))


def _int8_bomb(p: Path) -> None:
    """100 MB of int8 (500 channels, 10 s at 20 kHz) in a ~100 KB archive: inside the file and trial-length
    limits, 381 MB as float32 and 800 MB as float64."""
    ch = [f"E{k + 1}" for k in range(500)]
    np.savez_compressed(p, data=np.zeros((500, 200_000), np.int8), sfreq=20_000.0, ch_names=np.array(ch))


def _v73_set(p: Path) -> None:
    p.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec  1 00:00:00 2026 HDF5 schema 1.00 ."
                  .ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(64))


def cases() -> dict[str, tuple[Callable[[Path], None], dict]]:
    """file name -> (writer, expectation)."""
    rng = np.random.default_rng(SEED)
    junk = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    allowed = "Allowed: .npz, .npy, .pth, .fif, .edf, .bdf, .set, .vhdr"

    def bad(message: str) -> dict:
        return {"ok": False, "message": message}

    def good(info: str) -> dict:
        return {"ok": True, "info": info}

    n = names()
    return {
        # -- files that cannot be read
        "notes.txt": (_bytes(b"Fp1,Fz\n1,2\n"), bad(f"Unsupported file type '.txt' for 'notes.txt'. {allowed}")),
        "table.csv": (_bytes(b"1,2,3\n"), bad(f"Unsupported file type '.csv' for 'table.csv'. {allowed}")),
        "trial": (_bytes(b"\x00" * 16), bad("Unsupported file type '(none)' for 'trial'.")),
        "empty.edf": (_bytes(b""), bad("'empty.edf' is empty (0 bytes): expected one EEG trial in EDF format.")),
        "empty.npz": (_bytes(b""), bad("'empty.npz' is empty (0 bytes)")),
        "truncated.edf": (_truncated(".edf", 3000), bad("Could not read 'truncated.edf' as EDF: ")),
        "truncated.fif": (_truncated(".fif", 20000), bad("Could not read 'truncated.fif' as FIF: ")),
        "corrupt.fif": (_bytes(junk), bad("Could not read 'corrupt.fif' as FIF: ")),
        "corrupt.edf": (_bytes(b"0 " * 600), bad("Could not read 'corrupt.edf' as EDF: ")),
        "corrupt.bdf": (_bytes(b"\xff" + junk), bad("Could not read 'corrupt.bdf' as BDF: ")),
        "corrupt.set": (_bytes(junk), bad("Could not read 'corrupt.set' as EEGLAB: ")),
        "corrupt.npz": (_bytes(b"PK\x03\x04" + junk), bad("Could not read 'corrupt.npz' as NumPy archive: ")),
        "corrupt.npy": (_bytes(b"\x93NUMPY" + junk), bad("Could not read 'corrupt.npy' as NumPy array: ")),
        "corrupt.pth": (_bytes(junk), bad("Could not read 'corrupt.pth' as PyTorch: not a file of plain tensors")),
        "lonely.vhdr": (_lonely_vhdr, bad("'lonely.vhdr' names 'lonely.eeg' and 'lonely.vmrk', which are not")),
        # -- headers that name files outside what was given (refused before anything else is opened)
        "absolute_datafile.vhdr": (_vhdr("datafile=/etc/hostname", "MarkerFile=absolute_datafile.vmrk",
                                         "DataFile=absolute_datafile.eeg"),
                                   bad("'absolute_datafile.vhdr' names DataFile='/etc/hostname' in [Common Infos]: "
                                       "expected the bare name of a file given with it")),
        "dotdot_marker.vhdr": (_vhdr("DataFile=dotdot_marker.eeg", "MARKERFILE=../dotdot_marker.vmrk"),
                               bad("'dotdot_marker.vhdr' names MarkerFile='../dotdot_marker.vmrk' in [Common Infos]: "
                                   "expected the bare name")),
        "v73.set": (_v73_set, bad("'v73.set' is a MATLAB 7.3 (HDF5) file: expected an EEGLAB .set saved in MATLAB "
                                  "v7 format")),
        "object_array.npy": (_object_npy, bad("Refused to load 'object_array.npy': the file carries Python objects")),
        # -- readable files that are not one trial
        "one_d.npy": (_npy(np.zeros(500, np.int8)), bad("expected 2 dimensions (n_chans, n_times), got shape (500,)")),
        "three_d.npy": (_npy(np.zeros((2, 128, 50), np.int8)),
                        bad("got shape (2, 128, 50). A batch of 2 trials? Save one trial per file.")),
        "transposed.npy": (_npy(np.zeros((500, 128), np.int8)), bad("It looks transposed.")),
        "unnamed_64ch.npy": (_npy(np.zeros((64, 500), np.int8)),
                             bad("'unnamed_64ch.npy' holds an array of shape (64, 500) without channel names")),
        "wrong_keys.npz": (lambda p: np.savez(p, x=np.zeros(3)),
                           bad("'wrong_keys.npz' has no EEG: expected a key 'data' or 'eeg', found ['x'].")),
        "names_mismatch.npz": (lambda p: save_npz(p, tiled(), n[:100]),
                               bad("'names_mismatch.npz' has 100 channel names for 128 channels of data")),
        "bad_sfreq.npz": (lambda p: save_npz(p, tiled(), n, sfreq=-5.0),
                          bad("Invalid 'sfreq' in 'bad_sfreq.npz': expected one positive number of Hz, got -5.0.")),
        "text_data.npz": (lambda p: np.savez(p, data=np.array([["a", "b"]])),
                          bad("Invalid EEG array in 'text_data.npz': expected numbers, got dtype <U1.")),
        "label_1000.npz": (lambda p: save_npz(p, tiled(), n, label=1000),
                           bad("Invalid 'label' in 'label_1000.npz': expected a class index "
                               "(neuroimagen.data.classes.CLASSES) from 0 to 39, got 1000.")),
        "empty_stimulus.npz": (lambda p: save_npz(p, tiled(), n, stimulus=np.zeros((0, 0, 3), np.uint8)),
                               bad("Invalid 'stimulus' in 'empty_stimulus.npz': expected an RGB image (height, width, "
                                   "3) of 1 to 4096 pixels a side with values 0-255, got shape (0, 0, 3)")),
        "int8_bomb.npz": (_int8_bomb, bad("'int8_bomb.npz' holds 100,000,000 EEG samples (500 x 200,000): 381 MB as "
                                          "float32, over the 128 MB limit for one trial")),
        "whole_dataset.pth": (_whole_dataset, bad("'whole_dataset.pth' is a whole EEG-ImageNet data set (2 trials), "
                                                  "not one trial: use neuroimagen.data.load_eeg_imagenet")),
        "list.pth": (_torch_obj([1, 2, 3]), bad("'list.pth' holds a list: expected a tensor (n_chans, n_times)")),
        "no_eeg.fif": (_no_eeg, bad("'no_eeg.fif' has no EEG channels: expected channels of type 'eeg', "
                                    "found ['ecg', 'stim'].")),
        # -- trials that preprocess refuses
        "too_short.npz": (lambda p: save_npz(p, tiled(300), n),
                          bad("The trial is too short: 300 samples at 1000 Hz (300 ms); expected at least 460 ms")),
        "nan.npz": (_nan, bad("The EEG contains 1 NaN or infinite values in 1 channels ('F7')")),
        "inf.npz": (_inf, bad("The EEG contains 6 NaN or infinite values in 2 channels ('Fp1', 'Fz')")),
        "flat_all.npz": (lambda p: save_npz(p, np.zeros((128, 500)), n),
                         bad("The EEG is flat: all 128 EEG channels in the file are constant")),
        "unknown_names.npz": (lambda p: save_npz(p, tiled(), [f"Ch{k + 1}" for k in range(128)]),
                              bad("Only 0 of the file's 128 channels ('Ch1', 'Ch2', 'Ch3', 'Ch4', ...) could be "
                                  "placed; expected at least 8 EEG channels with known names or positions")),
        "too_few_match.npz": (_too_few, bad("Only 6 of the file's 128 channels ('Ch1', 'Ch2', 'Ch3', 'Ch4', ...) could "
                                            "be placed; expected at least 8 EEG channels")),
        # -- unusual but accepted
        "rate_512hz.edf": (lambda p: _write_mne(p, smooth_eeg(256, 512.0), n, 512.0), good("512 Hz -> 1000 Hz")),
        "rate_250hz.npz": (lambda p: save_npz(p, smooth_eeg(125, 250.0), n, sfreq=250.0), good("250 Hz -> 1000 Hz")),
        "already_cropped.npz": (lambda p: save_npz(p, smooth_eeg(440), n), good("already 440 samples")),
        "flat_two.npz": (_flat(2), good("'interpolated': {'Fp1': 'flat', 'Fz': 'flat'}")),
        "flat_many.npz": (_flat(20), good("108 of 128 model channels recorded, 20 interpolated from 108 channels")),
        "missing_20.npz": (_subset(n[-20:]), good("108 of 128 model channels recorded, 20 interpolated from 108")),
        # other caps, by their naming scheme (the values are the model montage's: these test the reading)
        "egi_128.npz": (lambda p: save_npz(p, smooth_eeg(), [f"E{k + 1}" for k in range(128)]),
                        good("0 of 128 model channels recorded, 128 interpolated from 128 channels (EGI names "
                             "(GSN-HydroCel-129))")),
        "biosemi_64.npz": (lambda p: save_npz(p, smooth_eeg()[:64], [f"{b}{k + 1}" for b in "AB" for k in range(32)]),
                           good("interpolated from 64 channels (BioSemi bank names (biosemi64))")),
        "missing_five.npz": (_subset(["Oz", "Pz", "Cz", "C3", "C4"]), good("'Cz': 'missing'")),
        "bare_128.npy": (_npy(smooth_eeg().astype(np.float16)),
                         good("taken as the model's 128 channels at 1000 Hz")),
        "renamed_channels.npz": (lambda p: save_npz(p, smooth_eeg(), [f"EEG {c.upper()}-Ref" for c in n]),
                                 good("'dropped': []")),
    }


def make_bad_inputs(out: str | Path = OUT) -> dict[str, dict]:
    """Write every case into ``out`` and ``out/manifest.json``; return the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (write, expect) in cases().items():
        write(out / name)
        manifest[name] = expect
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT), help="folder to write (default: tests/data/bad)")
    args = parser.parse_args(argv)
    manifest = make_bad_inputs(args.out)
    size = sum(f.stat().st_size for f in Path(args.out).iterdir())
    print(f"wrote {len(manifest)} files to {args.out} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
