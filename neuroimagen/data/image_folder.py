"""A folder of real stimulus images, read without ``metadata.json``: the data file names the images.

EEG-ImageNet's data file lists its images by name (``images``: ``n02951358_31190``, no extension) and the
trials point into that list. The images themselves are ImageNet's, kept as ``<name>.JPEG`` (or ``.jpg``,
``.jpeg``, ``.png``) either flat in one folder or in one subfolder per synset, as ImageNet's training set
(``n02951358/n02951358_31190.JPEG``). A stimulus record of such a folder (:func:`image_folder_records`) takes

- its class from the trials that show it (an index into the data file's ``labels``), checked against the
  synset prefix of its name;
- its label caption from that synset ("an image of a canoe");
- no detailed caption: that comes from the captions file BLIP writes (``python -m neuroimagen.data captions``),
  whose keys are the same relative paths as the records' ``file``.

Real photos differ in size: :func:`load_folder_images` centre-crops them square and resizes them to one side.
"""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath

import numpy as np

from .classes import SYNSETS, class_by_synset, label_caption

STIMULUS_EXTENSIONS = (".JPEG", ".jpg", ".jpeg", ".png", ".JPG", ".PNG")  # tried in this order
REAL_IMAGE_SIDE = 128  # default side of real images once loaded (the paper config's saliency maps)


def _synset_prefix(name: str) -> str | None:
    """``n02951358`` for ``n02951358_31190``; None for a name without ImageNet's synset prefix."""
    stem = PurePosixPath(name).name.split("_")[0]
    return stem if len(stem) == 9 and stem[0] == "n" and stem[1:].isdigit() else None


def find_image(root: str | Path, name: str) -> Path | None:
    """The file of the image called ``name`` (an ``images`` entry) in ``root``: ``root/<name><ext>``, else
    ``root/<synset>/<name><ext>`` (ImageNet's per-synset folders), ``ext`` one of :data:`STIMULUS_EXTENSIONS`
    in that order; None when there is none. A name that is not a plain file name (a path separator, ``..``) is
    refused: a data file's entries never make us read outside ``root``."""
    if not name or name != PurePosixPath(name).name or "\\" in name or ":" in name or name.startswith("."):
        raise ValueError(f"An 'images' entry must be a plain image name such as 'n02951358_31190', but got {name!r}: "
                         f"entries are looked up as files in {root} and may not name other folders.")
    root = Path(root)
    folders = [root]
    synset = _synset_prefix(name)
    if synset is not None:
        folders.append(root / synset)
    for folder in folders:
        for ext in STIMULUS_EXTENSIONS:
            f = folder / f"{name}{ext}"
            if f.is_file():
                return f
    return None


def missing_images_error(root: str | Path, missing: list[str], n_needed: int, what: str) -> FileNotFoundError:
    """The error for images of ``what`` (e.g. "the trials of eeg_5_95_std.pth") that ``root`` lacks: what was
    expected, and what the folder holds instead."""
    root = Path(root)
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix in STIMULUS_EXTENSIONS) if root.is_dir() else []
    there = (f"the folder has {len(found)} image files, e.g. {found[:3]}" if found else
             "the folder has no image files" if root.is_dir() else "there is no such folder")
    example = missing[0] if missing else "NAME"
    synset = _synset_prefix(example) or "nXXXXXXXX"
    return FileNotFoundError(
        f"{len(missing)} of the {n_needed} images shown in {what} are not in the stimulus folder {root}, e.g. "
        f"{missing[:3]}: expected each image as {root / example}.JPEG (or .jpg/.jpeg/.png) or, in ImageNet's layout, "
        f"{root / synset / example}.JPEG; {there}.")


def _data_index(data: str | Path) -> tuple[list[str], list[str], dict[int, int]]:
    """The data file's ``images`` names, ``labels`` synsets and each shown image's label (image index -> label)."""
    from .eeg_imagenet import _safe_load

    obj = _safe_load(data, "EEG-ImageNet data")
    name = Path(data).name
    if not isinstance(obj, dict) or not {"dataset", "labels", "images"} <= set(obj):
        raise ValueError(f"{name!r} is not in the EEG-ImageNet format: expected a dict with 'dataset', 'labels' and "
                         f"'images'.")
    shown: dict[int, int] = {}
    for k, t in enumerate(obj["dataset"]):
        image, label = int(t["image"]), int(t["label"])
        if not (0 <= image < len(obj["images"]) and 0 <= label < len(obj["labels"])):
            raise ValueError(f"{name!r}: trial {k} shows image {image} of class {label}, but the file has "
                             f"{len(obj['images'])} images and {len(obj['labels'])} labels (indices from 0).")
        if shown.setdefault(image, label) != label:
            raise ValueError(f"{name!r}: image {obj['images'][image]!r} is shown with labels {shown[image]} and "
                             f"{label} (trial {k}): an image has one class.")
    return list(obj["images"]), list(obj["labels"]), shown


@functools.lru_cache(maxsize=4)
def _records(root: str, data: str, stamp: tuple) -> tuple:
    from .stimuli import StimulusInfo

    names, labels, shown = _data_index(data)
    dname = Path(data).name
    if list(labels) != list(SYNSETS):
        raise ValueError(f"{dname!r}: its 'labels' must be EEG-ImageNet's 40 synsets in the published order "
                         f"({SYNSETS[0]}, {SYNSETS[1]}, ...; neuroimagen.data.classes.SYNSETS), which the label captions "
                         f"and the decoders' classes follow, but got {len(labels)} labels starting {list(labels)[:2]}.")
    records, missing = [], []
    for i in sorted(shown):
        name, c = names[i], shown[i]
        f = find_image(root, name)
        if f is None:
            missing.append(name)
            continue
        prefix = _synset_prefix(name)
        if prefix is not None and prefix != labels[c]:
            raise ValueError(f"{dname!r}: image {name!r} is of synset {prefix} by its name but its trials have label "
                             f"{c} ({labels[c]}).")
        records.append(StimulusInfo(file=f.relative_to(root).as_posix(), image=name, class_index=c, synset=labels[c],
                                    class_name=class_by_synset(labels[c]).name, label_caption=label_caption(c)))
    if missing:
        raise missing_images_error(root, missing, len(shown), f"the trials of {dname!r}")
    return tuple(records)


def image_folder_records(root: str | Path, data: str | Path) -> list:
    """The stimulus records (:class:`~neuroimagen.data.stimuli.StimulusInfo`) of a folder of real images: one per
    image the trials of the data file ``data`` show, in ``images`` order (see the module docstring).

    ``file`` is the image's path relative to ``root``; ``detailed_caption`` is empty (the captions file has it);
    the drawing fields of the rendered set stay at their defaults. Raises ``FileNotFoundError`` naming the
    missing images and the expected file names, ``ValueError`` when the data file's ``labels`` are not the 40
    EEG-ImageNet synsets in order or an image's name contradicts its trials' class.
    """
    root, data = Path(root), Path(data)
    if not root.is_dir():
        raise missing_images_error(root, ["NAME"], 0, f"the trials of {data.name!r}")
    st = data.stat()
    return list(_records(str(root), str(data), (st.st_size, st.st_mtime_ns, root.stat().st_mtime_ns)))


def load_folder_images(root: str | Path, records: list, size: int = REAL_IMAGE_SIDE) -> np.ndarray:
    """The images of ``records`` as uint8 (n, size, size, 3): each centre-cropped square and resized (bicubic)."""
    from PIL import Image, ImageOps

    out = np.empty((len(records), size, size, 3), np.uint8)
    for k, r in enumerate(records):
        with Image.open(Path(root) / r.file) as img:
            out[k] = np.asarray(ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC))
    return out
