"""BLIP captions of real images (``python -m neuroimagen.data captions``) and their use as detailed captions.

A tiny random BLIP (and a BERT tokenizer built from a small vocabulary written here) is saved to a temporary
folder and loaded by path, as a real captioner would be: no hub, no download.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from neuroimagen.data.classes import SYNSETS

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "dog", "cat", "on", "grass", "red"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A randomly initialised BlipForConditionalGeneration + BlipProcessor, saved with save_pretrained."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_blip import BlipImageProcessor

    out = tmp_path_factory.mktemp("tiny_blip")
    (out / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(out / "vocab.txt")))
    config = BlipConfig(
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Five PNGs in ImageNet's layout (synset folders, images named nXXXXXXXX_N), one of them flat."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    names = []
    for k, synset in enumerate(SYNSETS[:4]):
        (root / synset).mkdir()
        name = f"{synset}/{synset}_{100 + k}.png"
        Image.fromarray(rng.integers(0, 256, (40 + k, 48, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / f"{SYNSETS[4]}_7.png")
    return root, sorted([*names, f"{SYNSETS[4]}_7.png"])


def test_captions_cli_writes_every_image(tmp_path, tiny_blip, image_folder):
    from neuroimagen.data.__main__ import main
    from neuroimagen.data.image_captions import read_captions

    root, names = image_folder
    out = tmp_path / "captions.json"
    assert main(["captions", "--images", str(root), "--captioner", str(tiny_blip), "--out", str(out),
                 "--batch-size", "2", "--max-new-tokens", "6"]) == 0
    caps = read_captions(out)
    assert sorted(caps) == names  # every image, by its path relative to --images
    words = set(VOCAB[5:])
    for text in caps.values():  # decoded text of the tiny vocabulary, special tokens dropped
        assert text and set(text.split()) <= words
    assert json.loads(out.read_text()) == caps  # the format: one flat JSON object


def test_captions_bad_input(tmp_path, tiny_blip, image_folder):
    from neuroimagen.data.image_captions import caption_images, captions_for, label_caption_of, read_captions

    with pytest.raises(FileNotFoundError, match="No image folder"):
        caption_images(tmp_path / "nowhere", tiny_blip)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images in"):
        caption_images(tmp_path / "empty", tiny_blip)
    with pytest.raises(ValueError, match="Could not load a BLIP captioner"):
        caption_images(image_folder[0], tmp_path / "empty")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="one JSON object, image path -> caption text, got list"):
        read_captions(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"1 of 2 images have no caption .*n02389026_9"):
        captions_for(["n02389026_1", "n02389026_9"], {"n02389026/n02389026_1.JPEG": "a horse"})
    # EEG-ImageNet names images without extension: found by stem; the label caption from the synset
    assert captions_for(["n02389026_1"], {"n02389026/n02389026_1.JPEG": "a horse"}) == ["a horse"]
    assert label_caption_of("n02951358/n02951358_31190.JPEG") == "an image of a canoe"
    with pytest.raises(ValueError, match="expected ImageNet's 'nXXXXXXXX_N' naming"):
        label_caption_of("holiday.jpg")


def test_training_reads_the_captions_file(tmp_path, tiny_blip):
    """The captions CLI on a stimulus folder, then the training's caption reader takes its detailed captions
    from that file (``paths.captions``, as the stages pass it); the run folder's copy is a record only."""
    from neuroimagen.data.__main__ import main
    from neuroimagen.data.image_captions import read_captions
    from neuroimagen.data.stimuli import load_stimulus_metadata, make_stimulus_set
    from neuroimagen.training.common import RUN_CAPTIONS, caption_states, use_captions
    from neuroimagen.training.config import Paths

    stim = tmp_path / "stimuli"
    make_stimulus_set(stim, size=16, per_class=1)
    caps_file = tmp_path / "captions.json"
    main(["captions", "--images", str(stim), "--captioner", str(tiny_blip), "--out", str(caps_file),
          "--batch-size", "20", "--max-new-tokens", "5"])
    blip = read_captions(caps_file)
    records = load_stimulus_metadata(stim)
    assert len(blip) == len(records) == 40

    run = tmp_path / "run"
    use_captions(Paths(stimuli=str(stim), out=str(run), captions=str(caps_file)))
    assert read_captions(run / RUN_CAPTIONS) == blip
    states = caption_states(stim, run, captions=caps_file)  # as every stage calls it, with paths.captions
    assert states["detailed_texts"] == [blip[r.file] for r in records]
    assert states["detailed_texts"] != [r.detailed_caption for r in records]
    assert states["detailed"].shape[0] == 40
    # without a captions file: the stimulus metadata's captions, also in a run folder that holds a copy (no
    # caption source is taken silently from an earlier run)
    assert caption_states(stim, run)["detailed_texts"] == [r.detailed_caption for r in records]
    assert caption_states(stim, tmp_path / "plain")["detailed_texts"] == [r.detailed_caption for r in records]

    # an image missing from the file: a clear error before any stage runs
    del blip[records[3].file]
    (tmp_path / "short.json").write_text(json.dumps(blip))
    with pytest.raises(ValueError, match=rf"1 of 40 images have no caption in .*short.json.*{records[3].file}"):
        use_captions(Paths(stimuli=str(stim), out=str(tmp_path / "run2"), captions=str(tmp_path / "short.json")))
