"""The 40 EEG-ImageNet classes (Spampinato et al. 2017), in the published ``labels`` order.

Each class maps to the OpenMoji emoji that draw it in our stimulus set (``neuroimagen.data.stimuli``).
Where several emoji fit, all are used, so a class is not one fixed drawing. ``note`` says where an
emoji is only an approximation of the ImageNet class; ``iron`` has no emoji at all and is composed
from SVG shapes in OpenMoji's style (see ``stimuli.IRON_SVG``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageClass:
    index: int
    synset: str
    name: str  # as used in captions: "an image of a {name}"
    emoji: tuple[str, ...]  # OpenMoji file stems (Unicode code points); "composed:iron" for our own drawing
    note: str = ""


CLASSES: tuple[ImageClass, ...] = (
    ImageClass(0, "n02389026", "sorrel horse", ("1F40E", "1F434"), "generic horse; OpenMoji's horse is brown (sorrel-like)"),
    ImageClass(1, "n03888257", "parachute", ("1FA82",)),
    ImageClass(2, "n03584829", "iron", ("composed:iron",), "no emoji exists: composed from SVG shapes in OpenMoji's style"),
    ImageClass(3, "n02607072", "anemone fish", ("1F420", "1F41F"), "tropical fish / fish, not specifically a clownfish"),
    ImageClass(4, "n03297495", "espresso maker", ("1FAD6",), "no emoji: the teapot stands in for a stovetop (moka) espresso maker"),
    ImageClass(5, "n03063599", "coffee mug", ("2615",), "hot beverage"),
    ImageClass(6, "n03792782", "mountain bike", ("1F6B2", "1F6B5"), "bicycle / person mountain biking"),
    ImageClass(7, "n04086273", "revolver", ("1F52B",), "OpenMoji's pistol"),
    ImageClass(8, "n02510455", "giant panda", ("1F43C",)),
    ImageClass(9, "n11939491", "daisy", ("1F33C",), "blossom"),
    ImageClass(10, "n02951358", "canoe", ("1F6F6",)),
    ImageClass(11, "n02281787", "lycaenid butterfly", ("1F98B",), "generic butterfly"),
    ImageClass(12, "n02106662", "German shepherd", ("1F415", "1F436", "1F9AE"), "dog / dog face / guide dog"),
    ImageClass(13, "n04120489", "running shoe", ("1F45F",)),
    ImageClass(14, "n03590841", "jack-o'-lantern", ("1F383",)),
    ImageClass(15, "n02992529", "cellular telephone", ("1F4F1",)),
    ImageClass(16, "n03445777", "golf ball", ("26F3", "1F3CC"), "no golf-ball emoji: flag in hole / person golfing"),
    ImageClass(17, "n03180011", "desktop computer", ("1F5A5", "1F4BB"), "desktop computer / laptop"),
    ImageClass(18, "n02906734", "broom", ("1F9F9",)),
    ImageClass(19, "n07873807", "pizza", ("1F355",)),
    ImageClass(20, "n03773504", "missile", ("1F680",), "no missile emoji: rocket"),
    ImageClass(21, "n02492035", "capuchin monkey", ("1F412", "1F435"), "generic monkey"),
    ImageClass(22, "n03982430", "pool table", ("1F3B1",), "no table emoji: billiard ball"),
    ImageClass(23, "n03709823", "mailbag", ("1F45D", "1F4EB"), "no mailbag emoji: pouch / closed mailbox"),
    ImageClass(24, "n03100240", "convertible", ("1F697", "1F3CE"), "automobile / racing car"),
    ImageClass(25, "n03376595", "folding chair", ("1FA91",), "chair"),
    ImageClass(26, "n03877472", "pajama", ("1F455",), "no pajama emoji: t-shirt"),
    ImageClass(27, "n03775071", "mitten", ("1F9E4",), "gloves"),
    ImageClass(28, "n03272010", "electric guitar", ("1F3B8",), "guitar"),
    ImageClass(29, "n04069434", "reflex camera", ("1F4F7", "1F4F8"), "camera / camera with flash"),
    ImageClass(30, "n03452741", "grand piano", ("1F3B9",), "no piano emoji: musical keyboard"),
    ImageClass(31, "n03792972", "mountain tent", ("26FA",), "tent"),
    ImageClass(32, "n07753592", "banana", ("1F34C",)),
    ImageClass(33, "n13054560", "bolete mushroom", ("1F344",), "generic mushroom"),
    ImageClass(34, "n03197337", "digital watch", ("231A",), "watch"),
    ImageClass(35, "n02504458", "African elephant", ("1F418",)),
    ImageClass(36, "n02690373", "airliner", ("2708",), "airplane"),
    ImageClass(37, "n03272562", "electric locomotive", ("1F686", "1F685"), "train / bullet train"),
    ImageClass(38, "n04044716", "radio telescope", ("1F4E1",), "satellite antenna"),
    ImageClass(39, "n02124075", "Egyptian cat", ("1F408", "1F431"), "generic cat / cat face"),
)

SYNSETS: tuple[str, ...] = tuple(c.synset for c in CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
N_CLASSES = len(CLASSES)


def class_by_synset(synset: str) -> ImageClass:
    """Return the class with ImageNet synset id ``synset`` (e.g. ``'n02510455'``)."""
    for c in CLASSES:
        if c.synset == synset:
            return c
    raise ValueError(f"Unknown synset {synset!r}: expected one of the 40 EEG-ImageNet synsets, e.g. {SYNSETS[0]!r}.")


def article(name: str) -> str:
    """'a' or 'an' for ``name`` (by its first letter, good enough for our 40 names)."""
    return "an" if name[0].lower() in "aeiou" else "a"


def label_caption(class_index: int) -> str:
    """The paper's label caption, "an image of a {class}"."""
    name = CLASSES[class_index].name
    return f"an image of {article(name)} {name}"
