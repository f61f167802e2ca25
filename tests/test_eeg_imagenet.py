"""The EEG-ImageNet loader follows the reference loaders on a small file in the published layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroimagen.data import EEGImageNetDataset, load_eeg_imagenet, save_eeg_imagenet, save_splits
from neuroimagen.data.classes import CLASSES, SYNSETS
from neuroimagen.data.preprocessing import standardize

# 36 trials, 3 subjects; L varies as in the published files, some outside the kept 450..600
LENGTHS = [500, 449, 601, 450, 600, 512, 460, 499, 440, 700, 505, 480] * 3
SUBJECTS = [1 + k // 12 for k in range(36)]
SPLIT = {"train": list(range(0, 28)), "val": [28, 29, 30, 31], "test": [32, 33, 34, 35]}


def _reference_indices(lengths, subjects, idx, subject=None):
    """The reference Splitter's filter (450 <= L <= 600), with the subject filter on the same indices."""
    return [i for i in idx if 450 <= lengths[i] <= 600 and (subject is None or subjects[i] == subject)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("eeg_imagenet")
    dtypes = [np.float16, np.float32, np.float64]  # the published files hold float16 or float32
    eeg = [rng.standard_normal((128, n)).astype(dtypes[k % 3]) for k, n in enumerate(LENGTHS)]
    images = [f"{SYNSETS[k % 40]}_{k}" for k in range(36)]
    save_eeg_imagenet(tmp / "eeg.pth", eeg, list(range(36)), [k % 40 for k in range(36)], SUBJECTS, images=images)
    save_splits(tmp / "splits.pth", [SPLIT, {"train": [0], "val": [1], "test": [2]}])
    return tmp / "eeg.pth", tmp / "splits.pth", eeg


def test_written_file_has_the_published_layout(files):
    data_path, splits_path, eeg = files
    obj = torch.load(data_path, weights_only=True)  # what the reference loaders (and anyone) read
    assert set(obj) == {"dataset", "labels", "images"} and obj["labels"] == list(SYNSETS)
    assert len(obj["dataset"]) == 36 and set(obj["dataset"][0]) == {"eeg", "image", "label", "subject"}
    assert obj["dataset"][0]["eeg"].dtype == torch.float16 and obj["dataset"][1]["eeg"].shape == (128, 449)
    assert torch.load(splits_path, weights_only=True)["splits"][0] == SPLIT


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_indices_are_filtered_by_length_as_the_reference(files, split):
    data_path, splits_path, _ = files
    ds = load_eeg_imagenet(data_path, splits_path, split)
    assert list(ds.indices) == _reference_indices(LENGTHS, SUBJECTS, SPLIT[split])
    assert len(ds) == len(ds.indices) and isinstance(ds, EEGImageNetDataset)


def test_items_are_the_stored_tensors_cropped_20_460(files):
    data_path, splits_path, eeg = files
    ds = load_eeg_imagenet(data_path, splits_path, "train")
    for i, k in enumerate(ds.indices):
        item = ds[i]
        assert item["eeg"].dtype == torch.float32 and item["eeg"].shape == (128, 440)
        assert (item["label"], item["image"], item["subject"]) == (k % 40, k, SUBJECTS[k])
        stored = eeg[k][:, 20:460].astype(np.float32)
        if LENGTHS[k] >= 460:
            np.testing.assert_allclose(item["eeg"].numpy(), standardize(stored), atol=1e-5)
    short = ds[list(ds.indices).index(3)]["eeg"].numpy()  # L = 450: samples 20..449, then the last one repeated
    np.testing.assert_allclose(short[:, :430], standardize(np.pad(eeg[3][:, 20:].astype(np.float32),
                                                                   ((0, 0), (0, 10)), mode="edge"))[:, :430], atol=1e-5)
    assert np.all(short[:, 430:] == short[:, 429:430])


def test_arrays_match_the_items(files):
    data_path, splits_path, _ = files
    ds = load_eeg_imagenet(data_path, splits_path, "train")
    x, labels, images, subjects = ds.arrays()
    assert x.dtype == np.float32 and x.shape == (len(ds), 128, 440)
    np.testing.assert_allclose(x, np.stack([ds[i]["eeg"].numpy() for i in range(len(ds))]), atol=1e-5)
    assert list(labels) == [k % 40 for k in ds.indices]
    assert list(images) == list(ds.indices) and list(subjects) == [SUBJECTS[k] for k in ds.indices]
    np.testing.assert_array_equal(subjects, ds.subjects)


def test_subject_selection(files):
    data_path, splits_path, _ = files
    for subject in (1, 2, 3):
        ds = load_eeg_imagenet(data_path, splits_path, "train", subject=subject)
        assert list(ds.indices) == _reference_indices(LENGTHS, SUBJECTS, SPLIT["train"], subject)
        assert set(ds.subjects) <= {subject}
    everything = load_eeg_imagenet(data_path, split=None)
    assert list(everything.indices) == _reference_indices(LENGTHS, SUBJECTS, range(36))
    assert len(load_eeg_imagenet(data_path, splits_path, "train", split_index=1)) == 1
    with pytest.raises(ValueError, match="No subject 7 in 'eeg.pth': it has subjects \\[1, 2, 3\\]."):
        load_eeg_imagenet(data_path, splits_path, "train", subject=7)


def test_names_and_stimuli(files, tmp_path):
    from PIL import Image

    data_path, splits_path, _ = files
    ds = load_eeg_imagenet(data_path, splits_path, "test", stimuli_dir=tmp_path)
    assert ds.labels == list(SYNSETS) and ds.class_names == [c.name for c in CLASSES] and len(ds.images) == 36
    k = int(ds.indices[0])  # this file's trial k shows image k
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = 255
    Image.fromarray(pixels).save(tmp_path / f"{ds.images[k]}.png")
    stim = ds[0]["stimulus"]
    assert stim.shape == (3, 64, 64) and stim.dtype == torch.float32
    assert stim[:, :, :32].eq(1).all() and stim[:, :, 32:].eq(-1).all()
    missing = ds.images[int(ds.indices[1])]
    with pytest.raises(FileNotFoundError, match=rf"1 of the 1 images shown in these trials are not in the stimulus folder "
                                                rf".*\['{missing}'\]: expected each image as .*{missing}\.JPEG \(or "
                                                rf"\.jpg/\.jpeg/\.png\) or, in ImageNet's layout, .*{missing[:9]}/{missing}"
                                                rf"\.JPEG; the folder has 1 image files, e\.g\. \['{ds.images[k]}\.png'\]"):
        ds[1]


def test_wrong_files_and_arguments_are_refused(files, tmp_path):
    data_path, splits_path, _ = files
    with pytest.raises(ValueError, match="Allowed values are 'train', 'val', 'test' and None, but got 'holdout'"):
        load_eeg_imagenet(data_path, splits_path, "holdout")
    with pytest.raises(ValueError, match="split='train' needs a splits file"):
        load_eeg_imagenet(data_path)
    with pytest.raises(ValueError, match="'splits.pth' has 2 splits \\(0..1\\), but got 5"):
        load_eeg_imagenet(data_path, splits_path, "train", split_index=5)
    save_splits(tmp_path / "no_val.pth", {"train": [0], "test": [1]})
    with pytest.raises(ValueError, match="Split 0 of 'no_val.pth' has no 'val' part: expected 'train', 'val' and "
                                         "'test', got \\['test', 'train'\\]"):
        load_eeg_imagenet(data_path, tmp_path / "no_val.pth", "val")
    save_splits(tmp_path / "far.pth", {"train": [0, 99], "val": [], "test": []})
    with pytest.raises(ValueError, match="'far.pth' indexes trial 99, but 'eeg.pth' has 36 trials"):
        load_eeg_imagenet(data_path, tmp_path / "far.pth", "train")
    torch.save({"data": [], "labels": []}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="expected a dict with 'dataset', 'labels' and 'images', got "
                                         "\\['data', 'labels'\\]"):
        load_eeg_imagenet(tmp_path / "x.pth", split=None)
    torch.save({"dataset": [{"data": torch.zeros(128, 500), "label": 0}], "labels": [], "images": []},
               tmp_path / "y.pth")
    with pytest.raises(ValueError, match="trial 0 must be a dict with 'eeg', 'label', 'image' and 'subject', got "
                                         "\\['data', 'label'\\]"):
        load_eeg_imagenet(tmp_path / "y.pth", split=None)
    with pytest.raises(FileNotFoundError, match="No EEG-ImageNet data file at"):
        load_eeg_imagenet(tmp_path / "missing.pth", split=None)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_splits_file_with_code_is_refused_and_never_run(files, tmp_path):
    data_path, _, _ = files
    marker = tmp_path / "pwned.txt"
    torch.save({"splits": [{"train": [0], "val": [], "test": []}], "x": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="Refused to load the splits file 'evil.pth': it carries Python objects "
                                         "other than tensors"):
        load_eeg_imagenet(data_path, tmp_path / "evil.pth", "train")
    assert not marker.exists()


def test_a_per_subject_splits_file_counts_the_subjects_own_trials(tmp_path):
    """As the reference EEGDataset(subject=k) + Splitter read block_splits_by_image_single.pth: the indices
    count subject k's trials in file order; a subject with fewer trials (1,996 of 2,000) loses the last ones."""
    subjects = [1, 2, 3] * 12  # interleaved, so the two readings of an index differ
    del subjects[-3::3]  # subject 1 has 11 trials, the others 12
    lengths = [500 if k % 7 else 449 for k in range(len(subjects))]
    eeg = [np.full((128, n), k, np.float16) for k, n in enumerate(lengths)]
    save_eeg_imagenet(tmp_path / "d.pth", eeg, list(range(len(eeg))), [0] * len(eeg), subjects,
                      images=[f"i{k}" for k in range(len(eeg))])
    single = {"train": list(range(0, 8)), "val": [8, 9], "test": [10, 11]}
    save_splits(tmp_path / "single.pth", single)

    def reference(subject, part):
        data = [k for k, s in enumerate(subjects) if s == subject]  # EEGDataset(subject=k).data
        return [data[i] for i in single[part] if i < len(data) and 450 <= lengths[data[i]] <= 600]

    for subject in (1, 2, 3):
        for part in ("train", "test"):
            ds = load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "single.pth", part, subject=subject)
            assert ds.split_indexing == "subject" and list(ds.indices) == reference(subject, part)
            assert set(ds.subjects) == {subject}
    one = load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "single.pth", "test", subject=1)
    assert list(one.indices) == [30]  # index 10 is subject 1's last trial (file trial 30); 11 is past it
    ds = load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "single.pth", "train", subject=2, split_indexing="file")
    assert ds.split_indexing == "file" and list(ds.indices) == [1, 4]  # 7 has L = 449
    with pytest.raises(ValueError, match="split_indexing='subject' needs a subject"):
        load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "single.pth", "train", split_indexing="subject")
    save_splits(tmp_path / "all.pth", {"train": list(range(len(eeg))), "val": [], "test": []})
    assert load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "all.pth", "train", subject=2).split_indexing == "file"
    with pytest.raises(ValueError, match="'all.pth' indexes trial 34, but with split_indexing='subject' the "
                                         "indices count one subject's trials \\(at most 12 in 'd.pth'\\)"):
        load_eeg_imagenet(tmp_path / "d.pth", tmp_path / "all.pth", "train", subject=2, split_indexing="subject")


# ------------------------------------------------------------------ a folder of real images, without metadata.json
REAL_NAMES = ["n02389026_3", "n03888257_31190", "n03584829_7", "n02607072_12"]  # classes 0, 1, 2, 3


@pytest.fixture
def real_folder(tmp_path):
    """A data file of 5 trials showing 4 ImageNet-named images (image 3 twice), the images in both layouts:
    flat (.jpg, .png) and in synset folders (.JPEG), of different sizes; no metadata.json."""
    from PIL import Image

    trials = [{"eeg": torch.zeros(128, 470, dtype=torch.float16), "image": i, "label": i, "subject": 1}
              for i in (0, 1, 2, 3, 3)]
    torch.save({"dataset": trials, "labels": list(SYNSETS), "images": REAL_NAMES}, tmp_path / "eeg.pth")
    root = tmp_path / "images"
    (root / "n03584829").mkdir(parents=True)
    (root / "n02607072").mkdir()
    for rel, size in zip(["n02389026_3.jpg", "n03888257_31190.png", "n03584829/n03584829_7.JPEG",
                          "n02607072/n02607072_12.JPEG"], [(60, 40), (30, 50), (64, 64), (48, 36)]):
        Image.new("RGB", size, (200, 10, 10)).save(root / rel)
    return tmp_path / "eeg.pth", root


def test_a_folder_of_real_images_is_read_with_its_data_file(real_folder):
    from neuroimagen.data.stimuli import load_stimulus_images, load_stimulus_metadata

    data, root = real_folder
    records = load_stimulus_metadata(root, data)
    assert [r.file for r in records] == ["n02389026_3.jpg", "n03888257_31190.png", "n03584829/n03584829_7.JPEG",
                                         "n02607072/n02607072_12.JPEG"]
    assert [r.class_index for r in records] == [0, 1, 2, 3] and [r.image for r in records] == REAL_NAMES
    assert records[1].label_caption == "an image of a parachute" and records[1].detailed_caption == ""
    images = load_stimulus_images(root, data=data, size=16)
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8 and (images[..., 0] > 150).all()
    with pytest.raises(FileNotFoundError, match=r"No stimulus metadata .*\(a folder of real images, without "
                                                "metadata.json, is read only with its data file"):
        load_stimulus_metadata(root)  # the stages that need drawing parameters (layout) refuse it


def test_missing_real_images_and_a_wrong_label_order_are_refused_with_what_was_expected(real_folder):
    from neuroimagen.data.stimuli import load_stimulus_metadata

    data, root = real_folder
    (root / "n03584829" / "n03584829_7.JPEG").unlink()
    (root / "n02389026_3.jpg").rename(root / "n02389026_3.gif")
    with pytest.raises(FileNotFoundError, match=r"2 of the 4 images shown in the trials of 'eeg.pth' are not in the "
                                                r"stimulus folder .*images, e\.g\. \['n02389026_3', 'n03584829_7'\]: "
                                                r"expected each image as .*images/n02389026_3\.JPEG \(or "
                                                r"\.jpg/\.jpeg/\.png\) or, in ImageNet's layout, "
                                                r".*images/n02389026/n02389026_3\.JPEG; the folder has 2 image files"):
        load_stimulus_metadata(root, data)
    obj = torch.load(data, weights_only=True)
    torch.save({**obj, "labels": list(reversed(SYNSETS))}, data)
    with pytest.raises(ValueError, match="its 'labels' must be EEG-ImageNet's 40 synsets in the published order"):
        load_stimulus_metadata(root, data)


def test_a_real_folder_needs_a_captions_file_for_its_detailed_captions(real_folder, tmp_path):
    from neuroimagen.training.common import caption_states

    data, root = real_folder
    with pytest.raises(ValueError, match=r"has no metadata.json, so its detailed captions must come from a captions "
                                         r"file: 'python -m neuroimagen.data captions --images .*images --captioner"):
        caption_states(root, tmp_path / "cache", data=data)


def test_an_images_entry_never_reads_outside_the_image_folder(tmp_path):
    """A data file's ``images`` entries are image names: one that names another folder (``../secret``) is refused
    even when that file exists, rather than read."""
    from PIL import Image

    from neuroimagen.data.image_folder import find_image

    root = tmp_path / "images"
    (root / "n02951358").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "n02951358" / "n02951358_31190.JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    assert find_image(root, "n02951358_31190") == root / "n02951358" / "n02951358_31190.JPEG"
    for bad in ("../secret", str(tmp_path / "secret"), "n02951358/../../secret", "..\\secret", ".secret", "C:secret"):
        with pytest.raises(ValueError, match="plain image name"):
            find_image(root, bad)


def test_a_trial_pointing_past_the_files_images_is_refused(tmp_path):
    """A negative or too large image / label index would silently pick another image (Python's negative indexing)
    or fail with a bare IndexError: it is refused with what the file holds."""
    from neuroimagen.data.classes import SYNSETS
    from neuroimagen.data.image_folder import image_folder_records

    for image, label in ((-1, 0), (2, 0), (0, 40)):
        data = tmp_path / f"bad_{image}_{label}.pth"
        torch.save({"dataset": [{"eeg": torch.zeros(128, 500), "image": image, "label": label, "subject": 1}],
                    "labels": list(SYNSETS), "images": [f"{SYNSETS[0]}_1", f"{SYNSETS[0]}_2"]}, data)
        with pytest.raises(ValueError, match="indices from 0"):
            image_folder_records(tmp_path, data)
