"""Reconstruction metrics as the field reports them: MindEye's suite, as ATM uses it on THINGS-EEG2.

Low level: **PixCorr** (Pearson r of all RGB pixels, each reconstruction with its seen image) and **SSIM**
(skimage on grey levels, Gaussian weights, sigma 1.5). High level: **2-way identification** with AlexNet
layers 2 and 5, Inception v3 and CLIP image features, and the **correlation distance** of EfficientNet-B1 and
SwAV ResNet-50 features (lower is better). The definitions follow MindEye's ``Reconstruction_Metrics.ipynb``
(Scotti et al. 2023), copied into ATM's ``Reconstruction_Metrics_ATM.ipynb`` (Li et al. 2024):

- ``pixcorr``: no network; 425 px; mean Pearson r (higher is better);
- ``ssim``: no network, ``rgb2gray``; 425 px; mean SSIM (higher);
- ``alexnet2`` / ``alexnet5``: torchvision ``alexnet``, layers ``features.4`` / ``features.11``; 256 px, ImageNet
  normalisation; 2-way (higher);
- ``inception``: torchvision ``inception_v3``, ``avgpool``; 342 px, ImageNet; 2-way (higher);
- ``clip``: CLIP's image embedding (MindEye: ViT-L/14); 224 px (the model's side), CLIP's normalisation; 2-way (higher);
- ``effnet``: torchvision ``efficientnet_b1``, ``avgpool``; 255 px, ImageNet; correlation distance (lower);
- ``swav``: SwAV's ResNet-50, ``avgpool``; 224 px, ImageNet; correlation distance (lower).

**2-way identification** with AlexNet
layers 2 and 5, Inception v3 and CLIP image features, and the **correlation distance** of EfficientNet-B1 and
SwAV ResNet-50 features (lower is better). The definitions follow MindEye's ``Reconstruction_Metrics.ipynb``
(Scotti et al. 2023), copied into ATM's ``Reconstruction_Metrics_ATM.ipynb`` (Li et al. 2024):

=========== ============================== ============= ================= =====================
metric      network, layer                 input side    normalisation     score
=========== ============================== ============= ================= =====================
pixcorr     none                           425           none              mean r (higher)
ssim        none (``rgb2gray``)            425           none              mean SSIM (higher)
alexnet2    torchvision alexnet features.4 256           ImageNet          2-way (higher)
alexnet5    torchvision alexnet features.11 256          ImageNet          2-way (higher)
inception   torchvision inception_v3       342           ImageNet          2-way (higher)
            avgpool
clip        CLIP image embedding (ViT-L/14) 224          CLIP              2-way (higher)
effnet      torchvision efficientnet_b1    255           ImageNet          correlation distance
            avgpool                                                         (lower)
swav        SwAV ResNet-50 avgpool         224           ImageNet          correlation distance
                                                                            (lower)
=========== ============================== ============= ================= =====================

**2-way identification** of a reconstruction j: the fraction of the other seen images i whose features
correlate less with the reconstruction's than its own seen image's do, ``corr(gt_i, rec_j) < corr(gt_j, rec_j)``;
the metric is its mean over reconstructions (chance 0.5). MindEye computes it over all N images at once
(``np.corrcoef`` of the stacked features); so does :func:`two_way_identification`. When several trials share
a seen image (EEG-ImageNet's test trials: one image, several subjects), a trial is compared only with the
trials of *other* images (``image_ids``), which with distinct images is exactly MindEye's definition.

Every mean runs over the images actually given: the notebook most papers copy hard-codes the test set's
size in its PixCorr loop (``range(982)``), which silently drops or miscounts images on another data set.
Images of any size are brought to the input side (square, bilinear with antialiasing, as torchvision's
``Resize`` on tensors; MindEye's images are square already).

Each network is given by id or path (:func:`load_feature_net`): a torchvision weights name (``DEFAULT``,
``IMAGENET1K_V1`` or ``AlexNet_Weights.IMAGENET1K_V1``: fetched by torchvision, so it needs the network or
torch's cache), a state-dict file (``.pth``/``.pt``/``.safetensors``) or a folder holding one; CLIP is a
transformers ``CLIPVisionModelWithProjection`` (hub id such as ``openai/clip-vit-large-patch14``, MindEye's
ViT-L/14, or a folder). SwAV is facebookresearch/swav's ``resnet50`` (torchvision's ResNet-50 with SwAV's
weights): a state-dict file, as ``torch.hub`` saves it. Only the metrics of the networks given are computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._check import check_option, check_range
from .metrics import mean_sem, rgb_arrays

PIX_SIZE = 425  # MindEye: PixCorr and SSIM at 425 x 425 (NSD's stimulus side)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar")
SOURCES = {"metrics": "MindEye (Scotti et al. 2023) Reconstruction_Metrics.ipynb; ATM (Li et al. 2024) "
                      "Generation/Reconstruction_Metrics_ATM.ipynb"}


@dataclass(frozen=True)
class NetSpec:
    """How the field uses one network: its torchvision architecture, the layer read per metric, the input."""

    arch: str  # torchvision builder name ("" for CLIP, loaded by transformers)
    layers: dict  # metric -> layer name (None: the network's output)
    size: int  # input side
    mean: tuple
    std: tuple
    score: str  # "two_way" (higher is better) or "distance" (correlation distance, lower is better)


NETWORKS = {
    "alexnet": NetSpec("alexnet", {"alexnet2": "features.4", "alexnet5": "features.11"}, 256, IMAGENET_MEAN,
                       IMAGENET_STD, "two_way"),
    "inception": NetSpec("inception_v3", {"inception": "avgpool"}, 342, IMAGENET_MEAN, IMAGENET_STD, "two_way"),
    "clip": NetSpec("", {"clip": None}, 224, CLIP_MEAN, CLIP_STD, "two_way"),
    "effnet": NetSpec("efficientnet_b1", {"effnet": "avgpool"}, 255, IMAGENET_MEAN, IMAGENET_STD, "distance"),
    "swav": NetSpec("resnet50", {"swav": "avgpool"}, 224, IMAGENET_MEAN, IMAGENET_STD, "distance"),
}
METRICS = ("pixcorr", "ssim", *(m for spec in NETWORKS.values() for m in spec.layers))
HIGHER_IS_BETTER = {"pixcorr": True, "ssim": True, **{m: spec.score == "two_way" for spec in NETWORKS.values()
                                                        for m in spec.layers}}


# ----------------------------------------------------------------------------------------------- the metrics
def _corr_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``a`` (n, d) and every row of ``b`` (m, d), shape (n, m) (NaN: constant row)."""
    a = a.astype(np.float64) - a.mean(1, keepdims=True)
    b = b.astype(np.float64) - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b.T) / np.outer(na, nb)


def _check_features(recon_features, gt_features) -> tuple[np.ndarray, np.ndarray]:
    rec = np.asarray(recon_features).reshape(len(recon_features), -1)
    gt = np.asarray(gt_features).reshape(len(gt_features), -1)
    if rec.shape != gt.shape:
        raise ValueError(f"Got features of shape {rec.shape} for the reconstructions and {gt.shape} for the seen "
                         f"images: expected one reconstruction per seen image, same features.")
    return rec, gt


def two_way_identification(recon_features, gt_features, image_ids=None) -> np.ndarray:
    """MindEye's 2-way identification, per reconstruction, shape (n,): the fraction of the other seen images whose
    features correlate less with the reconstruction's than its own seen image's do.

    Parameters
    ----------
    recon_features, gt_features : ndarray, shape (n, ...)
        Features of the n reconstructions and of their n seen images (flattened per image).
    image_ids : array-like, shape (n,) | None
        The seen image of each pair: a reconstruction is compared only with pairs of other images (None: all
        seen images differ, as in MindEye). NaN where no other image exists.
    """
    rec, gt = _check_features(recon_features, gt_features)
    n = len(rec)
    if n < 2:
        raise ValueError(f"2-way identification needs at least 2 images, got {n}.")
    r = _corr_matrix(gt, rec)  # r[i, j] = corr(gt_i, rec_j)
    own = np.diag(r)
    others = ~np.eye(n, dtype=bool) if image_ids is None else np.asarray(image_ids)[:, None] != np.asarray(image_ids)[None]
    wins = ((r < own[None]) & others).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others.sum(0) > 0, wins / others.sum(0), np.nan)


def correlation_distance(recon_features, gt_features) -> np.ndarray:
    """1 - Pearson r of each reconstruction's features with its seen image's, shape (n,) (scipy's
    ``spatial.distance.correlation``, as MindEye scores EfficientNet-B1 and SwAV)."""
    rec, gt = _check_features(recon_features, gt_features)
    a = rec.astype(np.float64) - rec.mean(1, keepdims=True)
    b = gt.astype(np.float64) - gt.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def to_tensor(images, size: int):
    """Images (arrays in [0, 1] or uint8, PIL; any sizes) -> float tensor (n, 3, size, size) in [0, 1]: each resized
    to a square with bilinear interpolation and antialiasing (torchvision's ``Resize`` on tensors)."""
    import torch
    import torch.nn.functional as F

    out = []
    for arr in rgb_arrays(images):
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
        x = x.float() / 255 if arr.dtype == np.uint8 else x.float().clamp(0, 1)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x)
    return torch.cat(out) if out else torch.zeros(0, 3, size, size)


def pixcorr(recons, images, size: int = PIX_SIZE) -> np.ndarray:
    """PixCorr per pair, shape (n,): Pearson r of all RGB pixels at ``size`` x ``size`` (MindEye: 425). A constant
    image (a blank reconstruction) has no correlation to speak of and scores 0, where ``np.corrcoef`` would give
    NaN and make the whole mean NaN."""
    rec, gt = to_tensor(recons, size), to_tensor(images, size)
    if rec.shape != gt.shape:
        raise ValueError(f"Got {len(rec)} reconstructions for {len(gt)} seen images: they must pair one to one.")
    r = 1 - correlation_distance(rec.flatten(1).numpy(), gt.flatten(1).numpy())
    return np.nan_to_num(r, nan=0.0)


def ssim_gray(recons, images, size: int = PIX_SIZE) -> np.ndarray:
    """MindEye's SSIM per pair, shape (n,): skimage on ``rgb2gray`` images at ``size`` x ``size``, Gaussian weights
    (sigma 1.5), population covariance, data range 1."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    rec, gt = to_tensor(recons, size), to_tensor(images, size)
    if rec.shape != gt.shape:
        raise ValueError(f"Got {len(rec)} reconstructions for {len(gt)} seen images: they must pair one to one.")
    rec, gt = rgb2gray(rec.permute(0, 2, 3, 1).numpy()), rgb2gray(gt.permute(0, 2, 3, 1).numpy())
    return np.array([structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=1.0) for r, g in zip(rec, gt)])


# ----------------------------------------------------------------------------------------------- the networks
class FeatureNet:
    """A network and how the field reads it: images -> {metric: features (n, d)}.

    Parameters
    ----------
    module : torch.nn.Module
        The network (in eval mode here).
    spec : NetSpec
        Layers per metric, input side, normalisation (:data:`NETWORKS`).
    name : str
        What the report names it by (the id or path it was loaded from).
    """

    def __init__(self, module, spec: NetSpec, name: str, device: str = "cpu"):
        named = dict(module.named_modules())
        missing = [layer for layer in spec.layers.values() if layer is not None and layer not in named]
        if missing:
            raise ValueError(f"The network {name} has no layer {missing[0]!r}: expected torchvision's "
                             f"{spec.arch} layout (layers {list(spec.layers.values())}).")
        self.module, self.spec, self.name, self.device = module.to(device).eval(), spec, name, device

    def __call__(self, images, batch_size: int = 16) -> dict[str, np.ndarray]:
        import torch

        x = to_tensor(images, self.spec.size)
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        out: dict[str, list] = {m: [] for m in self.spec.layers}
        for i in range(0, len(x), batch_size):
            for m, f in self._forward(((x[i:i + batch_size] - mean) / std).to(self.device)).items():
                out[m].append(f.float().flatten(1).cpu().numpy())
        return {m: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for m, v in out.items()}

    @staticmethod
    def _hook(store: dict, key: str):
        return lambda _mod, _inp, output: store.__setitem__(key, output)

    def _forward(self, x) -> dict:
        """{metric: that layer's output} of one batch (forward hooks, as ``create_feature_extractor`` reads them)."""
        import torch

        named, store, handles = dict(self.module.named_modules()), {}, []
        for m, layer in self.spec.layers.items():
            if layer is not None:
                handles.append(named[layer].register_forward_hook(self._hook(store, m)))
        try:
            with torch.no_grad():
                output = self.module(x)
        finally:
            for h in handles:
                h.remove()
        return {m: output if layer is None else store[m] for m, layer in self.spec.layers.items()}


def load_state_dict_file(path: str | Path) -> dict:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: tensors only, never code)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, weights_only=True, map_location="cpu")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint around it
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}: expected a state dict (name -> tensor).")
    return state


def _torchvision():
    try:
        import torchvision
    except ImportError as err:
        raise ImportError("AlexNet, Inception v3, EfficientNet-B1 and SwAV are torchvision architectures: pip install "
                          "torchvision (the release that matches your torch).") from err
    return torchvision


def _build_torchvision(arch: str, state: dict | None, weights=None):
    """torchvision's ``arch`` with ``weights`` (a weights enum member) or untrained (``state`` loaded after)."""
    models = _torchvision().models
    if arch == "inception_v3" and weights is None:  # as the IMAGENET1K_V1 weights build it
        return models.inception_v3(weights=None, aux_logits=any(k.startswith("AuxLogits.") for k in state or {}),
                                   transform_input=True, init_weights=False)
    return getattr(models, arch)(weights=weights)


# name -> builder(state_dict | None) -> torch.nn.Module: torchvision's architectures (tests put tiny ones here).
ARCHITECTURES: dict[str, Callable] = {name: (lambda state, arch=spec.arch: _build_torchvision(arch, state))
                                      for name, spec in NETWORKS.items() if spec.arch}
WEIGHTS_NAME = re.compile(r"^([A-Za-z0-9]+_Weights\.)?[A-Z][A-Z0-9_]*$")


def _state_file(path: Path) -> Path:
    """The state-dict file of ``path``: the file itself, or the one such file in a folder."""
    if path.is_file():
        return path
    files = sorted(f for f in path.iterdir() if f.suffix in STATE_SUFFIXES)
    if len(files) != 1:
        raise ValueError(f"Expected one state-dict file ({', '.join(STATE_SUFFIXES)}) in {path}, found "
                         f"{[f.name for f in files] or 'none'}: pass the file's path.")
    return files[0]


def _load_state(net: str, module, state: dict, source) -> None:
    if net == "swav":  # facebookresearch/swav's hubconf: drop "module.", load non-strictly (no fc, extra heads)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        result = module.load_state_dict(state, strict=False)
        backbone = [k for k in result.missing_keys if not k.startswith("fc.")]
        if backbone:
            raise ValueError(f"{source} is not a SwAV ResNet-50 state dict: it lacks {len(backbone)} backbone weights "
                             f"(first: {backbone[0]}).")
        return
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{source} is not a state dict of torchvision's {NETWORKS[net].arch}: "
                         f"{str(err).splitlines()[0]} ...") from err


def _load_clip(id_or_path: str, device: str) -> FeatureNet:
    import torch
    from transformers import CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(id_or_path)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"Could not load CLIP from {id_or_path}: expected a hub id (e.g. openai/clip-vit-large-patch14, "
                         f"MindEye's ViT-L/14) or a folder loadable with CLIPVisionModelWithProjection ({err}).") from err

    class ImageEmbeds(torch.nn.Module):  # the projected image embedding, as CLIP's encode_image
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, x):
            return self.clip(pixel_values=x).image_embeds

    spec = NETWORKS["clip"]
    spec = NetSpec(spec.arch, spec.layers, int(model.config.image_size), spec.mean, spec.std, spec.score)
    return FeatureNet(ImageEmbeds(model), spec, id_or_path, device)


def load_feature_net(net: str, id_or_path: str | Path, device: str = "cpu") -> FeatureNet:
    """One network of the suite by id or path.

    Parameters
    ----------
    net : str
        ``"alexnet"``, ``"inception"``, ``"clip"``, ``"effnet"`` or ``"swav"``.
    id_or_path : str | Path
        A state-dict file or a folder holding one (torchvision's architecture, :data:`ARCHITECTURES`); a torchvision
        weights name (``DEFAULT``, ``IMAGENET1K_V1``, ``AlexNet_Weights.IMAGENET1K_V1``); for ``clip``, a transformers
        hub id or folder.
    """
    check_option("net", net, NETWORKS)
    source, path = str(id_or_path), Path(id_or_path)
    if net == "clip":
        return _load_clip(source, device)
    spec = NETWORKS[net]
    if path.exists():
        f = _state_file(path)
        state = load_state_dict_file(f)
        module = ARCHITECTURES[net](state)
        _load_state(net, module, state, f)
        return FeatureNet(module, spec, source, device)
    if not WEIGHTS_NAME.match(source) or net == "swav":
        raise ValueError(f"No file or folder at {source}" + (
            ": SwAV's weights are not torchvision's, pass the state-dict file of facebookresearch/swav's resnet50 "
            "(torch.hub.load('facebookresearch/swav:main', 'resnet50').state_dict() saved with torch.save)."
            if net == "swav" else f", and {source!r} is not a torchvision weights name (e.g. DEFAULT, IMAGENET1K_V1)."))
    models = _torchvision().models
    try:
        weights = models.get_weight(source) if "." in source else models.get_model_weights(spec.arch)[source]
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source!r} is not a weights name of torchvision's {spec.arch}: allowed "
                         f"{[w.name for w in models.get_model_weights(spec.arch)]} and DEFAULT.") from err
    try:
        module = _build_torchvision(spec.arch, None, weights)
    except (OSError, RuntimeError) as err:  # no network and not in torch's cache
        raise RuntimeError(f"torchvision could not fetch {weights} ({err}): without network, save its state dict on a "
                           f"machine with one and pass the file's path.") from err
    return FeatureNet(module, spec, source, device)


def parse_network_args(items) -> dict[str, str]:
    """``["alexnet=PATH", "clip=ID", ...]`` -> ``{"alexnet": "PATH", ...}`` (``--recon-metrics``), each name once."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        if not sep or not value:
            raise ValueError(f"Expected NAME=ID_OR_PATH with NAME among {list(NETWORKS)}, got {item!r}.")
        check_option("network name", name.strip(), NETWORKS)
        if name.strip() in out:
            raise ValueError(f"The network {name.strip()!r} is given twice.")
        out[name.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------------------------- accumulation
class ReconMetrics:
    """Accumulate the suite for reconstructions of seen images, row by row (ablation rows), as PaperMetrics does.

    ::

        rm = ReconMetrics({"alexnet": load_feature_net("alexnet", "alexnet.pth"),
                           "clip": load_feature_net("clip", "openai/clip-vit-large-patch14")})
        rm.set_stimuli(seen_images)            # n images of any size
        rm.new_row("L + I", samples_per_trial=2)
        rm.add("L + I", trials, k, images)     # reconstructions of trials (slice or indices), sample k
        rm.result("L + I")                     # {"pixcorr", "ssim", "alexnet2", "alexnet5", "clip", ...}

    With several samples per trial, each metric is computed on each sample's set of n reconstructions (2-way
    among those n) and averaged over the samples.

    Parameters
    ----------
    networks : dict[str, FeatureNet]
        Network name (:data:`NETWORKS`) -> loaded network; PixCorr and SSIM need none.
    pix_size : int
        Side of PixCorr and SSIM (MindEye: 425).
    """

    def __init__(self, networks: dict[str, FeatureNet] | None = None, pix_size: int = PIX_SIZE):
        self.networks = dict(networks or {})
        for name in self.networks:
            check_option("network name", name, NETWORKS)
        check_range("pix_size", pix_size, 7)  # skimage's 7 x 7 window
        self.pix_size = pix_size
        self._stimuli: list[np.ndarray] = []
        self._gt: dict[str, np.ndarray] = {}
        self._ids: np.ndarray | None = None
        self._rows: dict[str, dict[str, np.ndarray]] = {}
        self._added: dict[str, np.ndarray] = {}  # which (trial, sample) of a row add() has scored

    @property
    def metrics(self) -> list[str]:
        """The metrics computed: PixCorr, SSIM and those of the networks given."""
        return ["pixcorr", "ssim", *(m for n in self.networks for m in NETWORKS[n].layers)]

    def set_stimuli(self, stimuli, image_ids=None) -> None:
        """The seen images (one per trial, any size); ``image_ids``: which trials share an image (None: none do)."""
        self._stimuli = rgb_arrays(stimuli)
        if image_ids is not None and len(image_ids) != len(self._stimuli):
            raise ValueError(f"Got {len(image_ids)} image ids for {len(self._stimuli)} seen images.")
        self._ids = None if image_ids is None else np.asarray(image_ids)
        self._gt = {m: f for net in self.networks.values() for m, f in net(self._stimuli).items()}

    def new_row(self, row: str, samples_per_trial: int) -> None:
        """Start a row: ``samples_per_trial`` reconstructions of every seen image."""
        if not self._stimuli:
            raise RuntimeError("Call set_stimuli() before new_row(): the metrics compare with the seen images.")
        n, k = len(self._stimuli), int(samples_per_trial)
        self._rows[row] = {"pixcorr": np.full((n, k), np.nan), "ssim": np.full((n, k), np.nan)}
        self._added[row] = np.zeros((n, k), bool)
        for m, f in self._gt.items():
            self._rows[row][m] = np.full((n, k, f.shape[1]), np.nan, np.float32)

    def add(self, row: str, trials, sample: int, images) -> None:
        """Score reconstructions of ``trials`` (slice or indices into the seen images), sample number ``sample``."""
        if row not in self._rows:
            raise KeyError(f"Unknown row {row!r}: call new_row({row!r}, samples_per_trial) first.")
        idx = np.arange(len(self._stimuli))[trials]
        images = rgb_arrays(images)
        if len(images) != len(idx):
            raise ValueError(f"Got {len(images)} images for {len(idx)} trials: one reconstruction per trial.")
        r, seen = self._rows[row], [self._stimuli[i] for i in idx]
        r["pixcorr"][idx, sample] = pixcorr(images, seen, self.pix_size)
        r["ssim"][idx, sample] = ssim_gray(images, seen, self.pix_size)
        self._added[row][idx, sample] = True
        for net in self.networks.values():
            for m, f in net(images).items():
                r[m][idx, sample] = f

    def result(self, row: str, mask=None) -> dict:
        """The row's metrics over all trials (or those of the boolean ``mask``, e.g. one subject).

        ``pixcorr`` and ``ssim``: {"mean", "sem", "n"} over trials (a trial's samples averaged first); 2-way
        metrics: the mean fraction (chance 0.5); distances: the mean correlation distance; ``n_trials``,
        ``n_images``.
        """
        r = self._rows[row]
        sel = np.ones(len(self._stimuli), bool) if mask is None else np.asarray(mask, bool)
        if not self._added[row][sel].all():
            raise ValueError(f"Row {row!r} is missing reconstructions: add() every trial and sample first.")
        n, k = r["pixcorr"][sel].shape
        out = {"pixcorr": mean_sem(r["pixcorr"][sel].mean(1)), "ssim": mean_sem(r["ssim"][sel].mean(1)),
               "n_trials": int(n), "n_images": int(n * k)}
        ids = None if self._ids is None else self._ids[sel]
        for name in self.networks:
            for m in NETWORKS[name].layers:
                gt, rec = self._gt[m][sel], r[m][sel]
                if NETWORKS[name].score == "two_way":
                    per = [two_way_identification(rec[:, s], gt, ids) for s in range(k)] if n > 1 else []
                    out[m] = float(np.nanmean(per)) if per else float("nan")
                else:
                    out[m] = float(np.mean([correlation_distance(rec[:, s], gt) for s in range(k)]))
        return out

    def protocol(self) -> dict:
        """Which network (id or path), layer and input produced each metric (for metrics.json and the report)."""
        nets = {"pixcorr": {"network": None, "size": self.pix_size, "score": "Pearson r of RGB pixels"},
                "ssim": {"network": None, "size": self.pix_size, "score": "SSIM of grey levels (Gaussian, sigma 1.5)"}}
        for net in self.networks.values():
            for m, layer in net.spec.layers.items():
                nets[m] = {"network": net.name, "layer": layer or "image embedding", "size": net.spec.size,
                           "score": "2-way identification" if net.spec.score == "two_way" else "correlation distance"}
        return {"metrics": nets, "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in self.metrics},
                "missing": [m for m in METRICS if m not in self.metrics], "sources": SOURCES,
                "same_image_trials": "compared only with trials of other images"}


def recon_metrics(recons, images, networks: dict[str, FeatureNet] | None = None, image_ids=None,
                  pix_size: int = PIX_SIZE) -> dict:
    """The suite for n reconstructions and their n seen images in one call (:class:`ReconMetrics`, one row)."""
    rm = ReconMetrics(networks, pix_size)
    rm.set_stimuli(images, image_ids)
    recons = rgb_arrays(recons)
    if len(recons) != len(rm._stimuli):
        raise ValueError(f"Got {len(recons)} reconstructions for {len(rm._stimuli)} seen images: one each.")
    rm.new_row("recon", 1)
    rm.add("recon", slice(None), 0, recons)
    return rm.result("recon")


def recon_markdown(rec: dict) -> str:
    """The report's section for the field's reconstruction metrics (rows scored by :class:`ReconMetrics`)."""
    p = rec["recon_protocol"]
    shown = [m for m in METRICS if m in p["metrics"]]
    lines = ["## Reconstructions: the field's metrics (MindEye's suite, as ATM)", "",
             "**Protocol.** PixCorr and SSIM at "
             f"{p['metrics']['pixcorr']['size']} px; 2-way identification: for each reconstruction, the fraction of "
             "the other seen images whose features correlate less with it than its own seen image's (chance 50 %; "
             f"trials sharing a seen image are {p['same_image_trials']}); EffNet-B and SwAV: mean correlation distance "
             "(lower is better). Each sample's reconstructions are scored as one set, then averaged over samples. "
             f"Sources: {p['sources']['metrics']}.", "",
             "| metric | network (id or path) | layer | input px | better |", "|---|---|---|---|---|"]
    for m in shown:
        q = p["metrics"][m]
        lines.append(f"| {m} | {q['network'] or '-'} | {q.get('layer', '-')} | {q['size']} | "
                     f"{'higher' if p['higher_is_better'][m] else 'lower'} |")
    if p["missing"]:
        lines += ["", f"Not computed (no network given: `--recon-metrics NAME=ID_OR_PATH`): {', '.join(p['missing'])}."]
    lines += ["", "| row | trials | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]

    def cell(m, v):
        if m in ("pixcorr", "ssim"):
            return f"{v['mean']:.3f}"
        return f"{100 * v:.1f} %" if HIGHER_IS_BETTER[m] else f"{v:.3f}"

    for row, m in rec["rows"].items():
        if "recon" in m:
            lines.append(f"| {row} | {m['recon']['n_trials']} | " + " | ".join(cell(x, m["recon"][x]) for x in shown) + " |")
    return "\n".join(lines + [""])
