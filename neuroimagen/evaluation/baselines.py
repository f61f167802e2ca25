"""EEG-only class decoding: standard baselines beside our models, on the same split; the block-design effect.

Baselines (each fit on the train split, scored top-1 / top-5 on the test split):

- **Shrinkage LDA** on time-binned channels (``LinearDiscriminantAnalysis(solver="lsqr",
  shrinkage="auto")``, Ledoit-Wolf; Blankertz et al. 2011, "Single-trial analysis and classification
  of ERP components - a tutorial").
- **xDAWN covariances + tangent space + logistic regression** (pyriemann; Barachant & Congedo 2014,
  Rivet et al. 2009): ``XdawnCovariances(nfilter)`` -> ``TangentSpace`` -> ``LogisticRegression``.
  With 40 classes a covariance is (2 x 40 x nfilter)^2, so ``nfilter`` stays small.
- **EEGNet-style CNN** (Lawhern et al. 2018), the project's :class:`~neuroimagen.models.eeg_encoder.ConvTrunk`
  (EEGNet's spatial / depthwise-temporal / separable convolutions, as 1-D convolutions) with a linear
  ``final_layer``, trained with cross-entropy and early stopping on the validation split.

Ours: the pipeline's decoded class (``decode_class``: the ``class_decoder``'s CNN mixed with the caption readout,
when the checkpoint has one), the semantic decoder's caption readout alone and a logistic-regression probe on the
EEG encoder's features.

The block-design effect (Li et al., TPAMI 2020, "The perils and pitfalls of block design for EEG
classification experiments"): EEG-ImageNet showed each class in one block per subject, so a split by
image still puts trials of the same block in train and test; with slow drifts a classifier can then
recognise the block, hence the class. :func:`block_design_effect` compares LDA on data with and
without simulated drift, on the by-image split and on a split that holds whole blocks out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import confusion_matrix, per_class_accuracy, top_k_accuracy

LOADED_HZ = 250.0  # trials are averaged down to about this rate once at load time (the EEG encoders' own first step)


def decim_for(sfreq: float) -> int:
    """Samples averaged at load time for a file recorded at ``sfreq`` Hz: to about :data:`LOADED_HZ` (1 at or below it)."""
    return max(1, round(float(sfreq) / LOADED_HZ))


def bins_for(ms: float, step_ms: float, name: str) -> int:
    """Loaded samples per time bin of about ``ms`` milliseconds, at ``step_ms`` per loaded sample (at least one)."""
    if not ms > 0:
        raise ValueError(f"{name}: expected a positive bin width in ms, got {ms!r}.")
    return max(1, round(ms / step_ms))


# ----------------------------------------------------------------------------------------------
# Data
@dataclass
class SplitData:
    """One split, time-averaged at load time (float32 (n, n_chans, n_times // decim); ``sfreq``: the loaded rate).

    ``outputs`` holds whatever the load-time hooks computed on the full-rate trials (e.g. our models'
    class probabilities), so the full-rate data never has to be held at once.
    """

    x: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    subjects: np.ndarray
    indices: np.ndarray
    synsets: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    sfreq: float = LOADED_HZ

    @property
    def step_ms(self) -> float:
        """Milliseconds per loaded sample."""
        return 1000.0 / self.sfreq


def bin_time(x: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive groups of ``factor`` samples along the last axis (a trailing remainder is dropped)."""
    if factor == 1:
        return x
    n = x.shape[-1] // factor
    return x[..., :n * factor].reshape(*x.shape[:-1], n, factor).mean(-1)


def load_split(data: str | Path, splits: str | Path | None, split: str | None,
               hooks: dict[str, Callable[[torch.Tensor], np.ndarray]] | None = None,
               chunk: int = 256, decim: int | None = None) -> SplitData:
    """Read a split of an EEG-ImageNet-format file (cropped and standardized by the loader), time-averaged.

    Parameters
    ----------
    data, splits : str | Path
        The ``.pth`` data file and its splits file (``splits`` may be None with ``split=None``).
    split : str | None
        ``"train"``, ``"val"``, ``"test"`` or None (every trial).
    hooks : dict of callable | None
        ``name -> f(eeg)`` with ``eeg`` a float tensor (batch, n_chans, n_times) of full-rate trials,
        returning an array (batch, ...); the results are concatenated into ``SplitData.outputs[name]``.
    chunk : int
        Trials per hook call.
    decim : int | None
        Samples averaged together (None: :func:`decim_for` the file's ``sfreq``, 4 for the published 1 kHz files).
    """
    from ..data.eeg_imagenet import load_eeg_imagenet

    ds = load_eeg_imagenet(data, splits, split=split)
    file_hz = float(ds.space["sfreq"])
    decim = decim_for(file_hz) if decim is None else int(decim)
    n = len(ds)
    n_chans, n_times = (ds[0]["eeg"].shape if n else (0, 440))
    x = np.empty((n, n_chans, n_times // decim), np.float32)
    meta = np.empty((n, 3), int)
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in hooks or {}}
    for start in range(0, n, chunk):
        items = [ds[i] for i in range(start, min(n, start + chunk))]
        eeg = torch.stack([it["eeg"] for it in items])
        x[start:start + len(items)] = bin_time(eeg.numpy(), decim)
        meta[start:start + len(items)] = [(it["label"], it["image"], it["subject"]) for it in items]
        for name, fn in (hooks or {}).items():
            outputs[name].append(np.asarray(fn(eeg)))
    return SplitData(x, meta[:, 0], meta[:, 1], meta[:, 2], ds.indices.copy(), list(ds.labels), ds.class_names,
                     {k: np.concatenate(v) for k, v in outputs.items() if v}, sfreq=file_hz / decim)


# ----------------------------------------------------------------------------------------------
# Baselines: each returns test-set class probabilities (n_test, n_classes)
def _full_proba(model, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns for every class, also those absent from the training labels (probability 0)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(model.classes_, int)] = proba
    return out


def lda_probs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int,
              bin_factor: int = 10) -> np.ndarray:
    """Shrinkage LDA on channels x time bins of ``bin_factor`` loaded samples (10 x 4 ms at the published files' rate:
    128 x 11 features).

    ``x_train``, ``x_test``: trials (n, n_chans, n_times) as loaded (:class:`SplitData`'s ``x``); ``y_train``: labels.

    The cost is the solve with the (n_features x n_features) covariance: 40 ms bins fit 9,600 trials in
    about 25 s on one core, 20 ms bins take six times longer for the same accuracy on the simulated data.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    def feats(x: np.ndarray) -> np.ndarray:
        return bin_time(x, bin_factor).reshape(len(x), -1)

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(feats(x_train), y_train)
    return _full_proba(lda, lda.predict_proba(feats(x_test)), n_classes)


def xdawn_probs(train: SplitData, test: SplitData, n_classes: int, nfilter: int = 1, bin_factor: int = 2,
                C: float = 1.0) -> np.ndarray:
    """xDAWN covariances (``nfilter`` per class, Ledoit-Wolf) -> tangent space -> logistic regression.

    Time is averaged by ``bin_factor`` x 4 ms first (8 ms: 55 samples), which keeps the evoked waveforms
    and makes the 40 per-class xDAWN fits cheap.
    """
    from pyriemann.estimation import XdawnCovariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        XdawnCovariances(nfilter=nfilter, estimator="lwf", xdawn_estimator="lwf"),
        TangentSpace(metric="riemann"),
        StandardScaler(),
        LogisticRegression(C=C, max_iter=300),
    )
    clf.fit(bin_time(train.x, bin_factor).astype(np.float64), train.labels)
    return _full_proba(clf, clf.predict_proba(bin_time(test.x, bin_factor).astype(np.float64)), n_classes)


class EEGNetClassifier(torch.nn.Module):
    """EEGNet-style CNN (Lawhern et al. 2018, J. Neural Eng.): (batch, n_chans, n_times) -> logits (batch, n_outputs).

    The trunk is :class:`~neuroimagen.models.eeg_encoder.ConvTrunk` (spatial filters, depthwise temporal
    filters, separable convolution, as EEGNet); no softmax inside.
    """

    def __init__(self, n_chans: int, n_times: int, n_outputs: int, dropout: float = 0.25):
        super().__init__()
        from ..models.eeg_encoder import ConvTrunk

        # The data come time-averaged at load time already: no pooling at the input.
        self.trunk = ConvTrunk(n_chans, n_times, kernel=9, dropout=dropout, input_pool=1)
        self.final_layer = torch.nn.Linear(self.trunk.n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.trunk(x))


def _predict(model: torch.nn.Module, x: np.ndarray, batch: int = 512) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])


def eegnet_probs(train: SplitData, val: SplitData, test: SplitData, n_classes: int, seed: int = 0,
                 max_epochs: int = 30, patience: int = 4, batch_size: int = 64, lr: float = 1e-3) -> tuple[
                     np.ndarray, dict]:
    """Train :class:`EEGNetClassifier` with cross-entropy, early stopping on validation accuracy.

    Returns
    -------
    probs : ndarray, shape (n_test, n_classes)
    info : dict
        ``epochs`` run and ``best_val_top1``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # weight init and dropout draw from torch's global generator: keep it local
        torch.manual_seed(seed)
        model = EEGNetClassifier(train.x.shape[1], train.x.shape[2], n_classes)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
        y = torch.from_numpy(train.labels).long()
        best, best_state, bad, epoch = -1.0, None, 0, 0
        while epoch < max_epochs and bad < patience:
            model.train()
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(perm), batch_size):
                idx = perm[i:i + batch_size]
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(train.x[idx.numpy()])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            epoch += 1
            acc = float((_predict(model, val.x).argmax(1).numpy() == val.labels).mean()) if len(val.x) else 0.0
            if acc > best:
                best, bad = acc, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
        model.load_state_dict(best_state)
        probs = torch.softmax(_predict(model, test.x), dim=1).numpy()
    return probs, {"epochs": epoch, "best_val_top1": round(best, 4)}


def probe_probs(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, n_classes: int,
                C: float = 1.0) -> np.ndarray:
    """Logistic-regression probe on fixed features (standardized), test probabilities (n_test, n_classes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(train_features, train_labels)
    return _full_proba(clf[-1], clf.predict_proba(test_features), n_classes)


# ----------------------------------------------------------------------------------------------
# Our models as load-time hooks
def pipeline_hooks(pipe) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    """Hooks for :func:`load_split` that run a NeuroImagenPipeline's EEG models on full-rate trials.

    ``semantic``: the semantic decoder + caption bank's class probabilities (the caption readout, in the
    bank's class order: see :func:`class_order_for`); ``features``: the EEG encoder's features f(x);
    ``decoded`` (only with a ``class_decoder``): the class probabilities the pipeline decodes (``decode_class``).
    """

    def semantic(eeg: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            states = pipe.semantic_decoder(eeg.to(pipe.device, pipe.semantic_decoder.dtype)).float()
            return pipe.caption_bank.readout(states, k=1, targets=pipe.semantic_decoder.config.targets)[
                "class_probs"].cpu().numpy()

    def features(eeg: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return pipe.eeg_encoder(eeg.to(pipe.device, pipe.eeg_encoder.dtype)).float().cpu().numpy()

    def decoded(eeg: torch.Tensor) -> np.ndarray:
        return pipe.decode_class(eeg.to(pipe.device, pipe.eeg_encoder.dtype), k=1)["class_probs"].cpu().numpy()

    hooks = {"semantic": semantic, "features": features}
    if getattr(pipe, "class_decoder", None) is not None:
        hooks["decoded"] = decoded
    return hooks


def class_order_for(pipe, labels: list[str]) -> np.ndarray | None:
    """Columns of the pipeline's class probabilities for the file's ``labels`` (synsets), or None if identical.

    The caption bank's classes are ``neuroimagen.data.classes.CLASSES`` when it has 40 label captions.
    """
    from ..data.classes import SYNSETS

    n_bank = pipe.caption_bank.n_classes
    if list(labels) == list(SYNSETS)[:n_bank] and len(labels) == n_bank:
        return None
    if n_bank == len(SYNSETS) and set(labels) <= set(SYNSETS):
        return np.array([SYNSETS.index(s) for s in labels])
    if n_bank == len(labels):
        return None  # same size, unknown synsets: assume the bank was built in the file's label order
    raise ValueError(f"The pipeline's caption bank has {n_bank} classes but the data file has {len(labels)} labels: "
                     f"the semantic readout cannot be scored on this file.")


# ----------------------------------------------------------------------------------------------
def score(probs: np.ndarray, test: SplitData, n_classes: int) -> dict:
    """Top-1 / top-5, per-subject top-1, per-class top-1 and the confusion matrix of test probabilities."""
    pred = probs.argmax(1)
    return {
        "top1": top_k_accuracy(probs, test.labels, 1),
        "top5": top_k_accuracy(probs, test.labels, min(5, n_classes)),
        "per_subject_top1": {int(s): top_k_accuracy(probs[test.subjects == s], test.labels[test.subjects == s], 1)
                             for s in np.unique(test.subjects)},
        "per_class_top1": per_class_accuracy(pred, test.labels, n_classes).tolist(),
        "confusion": confusion_matrix(pred, test.labels, n_classes).tolist(),
        "n_test": int(len(test.labels)),
    }


BASELINES = ("lda", "xdawn", "eegnet")
METHOD_NAMES = {
    "lda": "Shrinkage LDA (channels x time bins)",
    "xdawn": "xDAWN covariances + tangent space + LR",
    "eegnet": "EEGNet-style CNN",
    "ours_class": "Ours: the pipeline's decoded class (class decoder + readout)",
    "ours_semantic": "Ours: semantic decoder caption readout",
    "ours_probe": "Ours: LR probe on EEG encoder features",
}


def run_baselines(data: str | Path, splits: str | Path, pipe=None, methods: tuple[str, ...] = BASELINES,
                  seed: int = 0, xdawn_nfilter: int = 1, eegnet_epochs: int = 30, lda_bin_ms: float = 40.0,
                  xdawn_bin_ms: float = 8.0, log: Callable[[str], None] = print) -> dict:
    """Fit each baseline on the train split and score it on the test split; add our models when ``pipe`` is given.

    Parameters
    ----------
    data, splits : str | Path
        EEG-ImageNet-format data and splits files.
    pipe : NeuroImagenPipeline | None
        Adds ``ours_semantic`` and ``ours_probe``, and ``ours_class`` when it has a ``class_decoder``.
    methods : tuple of str
        Among ``"lda"``, ``"xdawn"``, ``"eegnet"``.
    seed : int
        Seeds the CNN.
    xdawn_nfilter, eegnet_epochs : int
        xDAWN filters per class; the CNN's maximum epochs.
    lda_bin_ms, xdawn_bin_ms : float
        Time bins of LDA and xDAWN, in ms: rounded to whole loaded samples (4 ms each at 250 Hz and above; the
        width used is reported as ``bin_ms``).

    Returns
    -------
    results : dict
        Per method: :func:`score`'s numbers plus ``fit_s`` (fit + predict wall time); ``n_classes``,
        ``class_names``, split sizes and ``load_s``.
    """
    from .._check import check_option

    for m in methods:
        check_option("methods", m, BASELINES)
    t0 = time.perf_counter()
    hooks = pipeline_hooks(pipe) if pipe is not None else None
    use = {"train": {"features": hooks["features"]} if hooks else None, "val": None, "test": hooks}
    parts = {s: load_split(data, splits, s, hooks=use[s]) for s in ("train", "val", "test")}
    train, val, test = parts["train"], parts["val"], parts["test"]
    n_classes = len(test.synsets)
    if pipe is not None:
        order = class_order_for(pipe, test.synsets)
        if order is not None:
            for k in ("semantic", "decoded"):
                if k in test.outputs:
                    test.outputs[k] = test.outputs[k][:, order]
    out: dict = {"data": str(data), "splits": str(splits), "n_classes": n_classes, "class_names": test.class_names,
                 "sizes": {k: int(len(v.labels)) for k, v in parts.items()}, "load_s": round(time.perf_counter() - t0, 1),
                 "methods": {}}
    lda_bin, xdawn_bin = (bins_for(lda_bin_ms, train.step_ms, "lda_bin_ms"),
                          bins_for(xdawn_bin_ms, train.step_ms, "xdawn_bin_ms"))
    out["loaded_hz"] = train.sfreq
    log(f"loaded {out['sizes']} at {train.sfreq:g} Hz in {out['load_s']} s")

    def record(name: str, fit: Callable[[], np.ndarray | tuple[np.ndarray, dict]]):
        t = time.perf_counter()
        res = fit()
        probs, info = res if isinstance(res, tuple) else (res, {})
        out["methods"][name] = {"name": METHOD_NAMES[name], **score(probs, test, n_classes), **info,
                                "fit_s": round(time.perf_counter() - t, 1)}
        log(f"{name}: top1 {out['methods'][name]['top1']:.3f} top5 {out['methods'][name]['top5']:.3f} "
            f"({out['methods'][name]['fit_s']} s)")

    if "lda" in methods:
        record("lda", lambda: (lda_probs(train.x, train.labels, test.x, n_classes, lda_bin),
                               {"bin_ms": lda_bin * train.step_ms}))
    if "xdawn" in methods:
        record("xdawn", lambda: (xdawn_probs(train, test, n_classes, nfilter=xdawn_nfilter, bin_factor=xdawn_bin),
                                 {"bin_ms": xdawn_bin * train.step_ms, "nfilter": xdawn_nfilter}))
    if "eegnet" in methods:
        record("eegnet", lambda: eegnet_probs(train, val, test, n_classes, seed=seed, max_epochs=eegnet_epochs))
    if pipe is not None:
        if "decoded" in test.outputs:
            record("ours_class", lambda: test.outputs["decoded"])
        record("ours_semantic", lambda: test.outputs["semantic"])
        record("ours_probe", lambda: probe_probs(train.outputs["features"], train.labels, test.outputs["features"],
                                                 n_classes))
    return out


# ----------------------------------------------------------------------------------------------
# Block design (Li et al. 2020)
def _lda_accuracy(x_tr, y_tr, x_te, y_te, n_classes: int, bin_factor: int) -> float:
    return top_k_accuracy(lda_probs(x_tr, y_tr, x_te, n_classes, bin_factor), y_te, 1)


def block_design_effect(files: dict[str, tuple[str | Path, str | Path]], log: Callable[[str], None] = print,
                        max_folds: int | None = None, lda_bin_ms: float = 40.0) -> dict:
    """LDA top-1 on each data file under two splits that differ in whether test blocks were seen in training.

    - ``by_image``: the file's own split (split 0), by image, as EEG-ImageNet's: every test trial's
      recording block (subject x class) also has trials in the training set.
    - ``held_out_blocks``: leave one subject out, so no test block has trials in training. The only way to
      hold blocks out when each class was recorded in one block per subject; it also costs the
      between-subject differences, which is why the same split on data *without* drift is the reference.

    Parameters
    ----------
    files : dict
        ``condition -> (data, splits)``, e.g. ``{"no drift": (...), "block drift": (...)}``.
    max_folds : int | None
        Leave-one-subject-out folds to run (None: every subject).
    lda_bin_ms : float
        LDA time bins, in ms (rounded to whole loaded samples).

    Returns
    -------
    results : dict
        ``condition -> {"by_image": top1, "held_out_blocks": top1, "folds": {subject: top1}, ...}``.
    """
    from ..data.eeg_imagenet import load_eeg_imagenet

    out = {}
    for cond, (data, splits) in files.items():
        t0 = time.perf_counter()
        all_trials = load_split(data, None, None)
        n_classes = len(all_trials.synsets)
        lda_bin = bins_for(lda_bin_ms, all_trials.step_ms, "lda_bin_ms")
        split = {s: load_eeg_imagenet(data, splits, split=s).indices for s in ("train", "test")}
        pos = {int(k): i for i, k in enumerate(all_trials.indices)}
        tr = np.array([pos[int(k)] for k in split["train"]])
        te = np.array([pos[int(k)] for k in split["test"]])
        x, y, subj = all_trials.x, all_trials.labels, all_trials.subjects
        by_image = _lda_accuracy(x[tr], y[tr], x[te], y[te], n_classes, lda_bin)
        folds = {}
        for s in np.unique(subj)[:max_folds]:
            # Train on the other subjects' training-split trials, test on this subject's test-split trials:
            # the test images stay unseen, as in the by-image split, and no test block is in training.
            tr_s = tr[subj[tr] != s]
            te_s = te[subj[te] == s]
            folds[int(s)] = _lda_accuracy(x[tr_s], y[tr_s], x[te_s], y[te_s], n_classes, lda_bin)
        out[cond] = {"data": str(data), "by_image": by_image, "held_out_blocks": float(np.mean(list(folds.values()))),
                     "folds": folds, "n_trials": int(len(y)),
                     "bin_ms": lda_bin * all_trials.step_ms, "wall_s": round(time.perf_counter() - t0, 1)}
        log(f"block design, {cond}: by image {by_image:.3f}, held-out blocks {out[cond]['held_out_blocks']:.3f} "
            f"({out[cond]['wall_s']} s)")
    return out
