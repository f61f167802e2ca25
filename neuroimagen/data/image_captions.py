"""Captions of real images: BLIP's detailed captions and the label captions of the images' synsets.

The paper conditions on two kinds of caption (Lan et al. 2023, Sec. 3.3): the label caption "an image of
{class}" and a BLIP caption of the seen image. Our stimulus set writes both into its ``metadata.json``;
for the real ImageNet images this module makes the BLIP ones::

    python -m neuroimagen.data captions --images IMAGENET_DIR --captioner Salesforce/blip-image-captioning-large \\
        --out captions.json

The captions file is one JSON object: the path of each image relative to ``--images`` (POSIX separators,
with its extension) -> its caption, e.g. ``{"n02951358/n02951358_31190.JPEG": "a man paddling a canoe"}``.
Training reads it as the detailed caption (``"captions"`` in a config's ``paths``, or ``--captions``): an
image of the stimulus folder is found in it by its relative path or, as EEG-ImageNet names images without
extension (``n02951358_31190``), by its file name without extension. The label caption of an image comes
from its synset, the ``n........`` prefix of its name (:func:`label_caption_of`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from .classes import class_by_synset, label_caption

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # compared in lower case: .JPEG is ImageNet's
DEFAULT_MAX_NEW_TOKENS = 30  # BLIP captions are a sentence; transformers' own default (20 tokens) cuts some


def list_images(images_dir: str | Path) -> list[str]:
    """Image files under ``images_dir`` (recursively), as sorted POSIX paths relative to it."""
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}: expected a folder of images ({', '.join(IMAGE_EXTENSIONS)}).")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"No images in {root}: expected files ending in {', '.join(IMAGE_EXTENSIONS)} (any case).")
    return files


def caption_images(images_dir: str | Path, captioner: str | Path, out: str | Path | None = None,
                   batch_size: int = 8, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1,
                   device: str = "cpu", log=None) -> dict[str, str]:
    """Caption every image of a folder with BLIP and write the captions file.

    Parameters
    ----------
    images_dir : str | Path
        Folder of images, searched recursively (ImageNet's ``nXXXXXXXX/`` class folders or a flat folder).
    captioner : str | Path
        A BLIP captioning model, hub id or folder with its processor: loaded with
        ``BlipProcessor.from_pretrained`` and ``BlipForConditionalGeneration.from_pretrained``
        (e.g. ``Salesforce/blip-image-captioning-large``).
    out : str | Path | None
        The captions file to write (JSON, relative image path -> caption); None: only return the captions.
    batch_size, max_new_tokens, num_beams : int
        Images per forward pass; caption length and beam search (1: greedy) of ``generate``.
    device : str
        torch device.
    log : callable | None
        Called with a progress line after each batch.

    Returns
    -------
    captions : dict of str -> str
        Relative image path -> caption, in sorted path order.
    """
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from .._check import check_range

    check_range("batch_size", batch_size, 1)
    check_range("max_new_tokens", max_new_tokens, 1)
    check_range("num_beams", num_beams, 1)
    files = list_images(images_dir)
    try:
        processor = BlipProcessor.from_pretrained(str(captioner))
        model = BlipForConditionalGeneration.from_pretrained(str(captioner)).to(device).eval()
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not load a BLIP captioner from {captioner!s}: expected a hub id or a folder with a "
                         f"BlipForConditionalGeneration model and its BlipProcessor ({err}).") from err
    captions: dict[str, str] = {}
    root = Path(images_dir)
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        images = []
        for f in batch:
            try:
                with Image.open(root / f) as img:
                    images.append(img.convert("RGB"))
            except OSError as err:
                raise ValueError(f"Cannot read {root / f} as an image: {err}.") from err
        inputs = processor(images=images, return_tensors="pt").to(device)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
        for f, text in zip(batch, processor.batch_decode(ids, skip_special_tokens=True)):
            captions[f] = text.strip()
        if log is not None:
            log(f"captioned {min(start + batch_size, len(files))} / {len(files)} images")
    if out is not None:
        write_captions(captions, out)
    return captions


def write_captions(captions: dict[str, str], out: str | Path) -> Path:
    """Write a captions file (JSON object, relative image path -> caption, sorted keys)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(sorted(captions.items())), indent=1, ensure_ascii=False) + "\n")
    return out


def read_captions(path: str | Path) -> dict[str, str]:
    """Read a captions file written by :func:`write_captions` (or by hand in the same format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No captions file at {path}: expected the JSON file written by "
                                f"'python -m neuroimagen.data captions --images DIR --captioner ID --out {path}'.")
    try:
        captions = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"The captions file {path} is not JSON: {err}.") from err
    if not isinstance(captions, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in captions.items()):
        got = type(captions).__name__ if not isinstance(captions, dict) else "an object with non-string values"
        raise ValueError(f"The captions file {path} must hold one JSON object, image path -> caption text, "
                         f"got {got}.")
    return captions


def captions_for(names: list[str], captions: dict[str, str], source: str = "the captions file") -> list[str]:
    """The caption of each image of ``names`` (relative paths, or names without extension as EEG-ImageNet's).

    An image is found by its exact relative path, else by its file name without extension; every image
    must be found, and a name without extension must not match two files.
    """
    by_stem: dict[str, list[str]] = {}
    for key in captions:
        by_stem.setdefault(PurePosixPath(key).stem, []).append(key)
    out, missing = [], []
    for name in names:
        if name in captions:
            out.append(captions[name])
            continue
        keys = by_stem.get(PurePosixPath(name).stem, [])
        if len(keys) > 1:
            raise ValueError(f"Image {name!r} matches {len(keys)} entries of {source} ({keys[:3]}): name the images "
                             f"by their path relative to the image folder.")
        if keys:
            out.append(captions[keys[0]])
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"{len(missing)} of {len(names)} images have no caption in {source}, e.g. "
                         f"{missing[:3]} (it has {len(captions)} entries, e.g. {list(captions)[:2]}): caption the "
                         f"same image folder with 'python -m neuroimagen.data captions'.")
    return out


def synset_of(name: str) -> str:
    """The ImageNet synset of an image named like ``n02951358_31190`` (or ``n02951358/n02951358_31190.JPEG``)."""
    stem = PurePosixPath(name).name.split("_")[0].split(".")[0]
    if not (len(stem) == 9 and stem[0] == "n" and stem[1:].isdigit()):
        raise ValueError(f"Cannot read a synset from the image name {name!r}: expected ImageNet's "
                         f"'nXXXXXXXX_N' naming, e.g. 'n02951358_31190'.")
    return stem


def label_caption_of(name: str) -> str:
    """The paper's label caption of an image, from its synset: ``'n02951358_31190'`` -> ``'an image of a canoe'``."""
    return label_caption(class_by_synset(synset_of(name)).index)


def add_captions_arguments(p) -> None:
    """The ``captions`` subcommand's arguments."""
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--captioner", required=True, help="BLIP captioning model: hub id or folder, e.g. "
                   "Salesforce/blip-image-captioning-large")
    p.add_argument("--out", required=True, help="captions file to write (JSON: relative image path -> caption)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"caption length limit in tokens (default: {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (default: 1, greedy)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
