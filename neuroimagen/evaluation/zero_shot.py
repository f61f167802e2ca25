"""The field's THINGS-EEG2 protocol: 200-way zero-shot identification of test concepts never seen in training.

As NICE and the papers after it report it: an EEG encoder is trained contrastively
(InfoNCE, CLIP-style) to map training trials onto an embedding of their stimulus; at test, each test image's
trials averaged over all their repetitions (80 in THINGS-EEG2) are embedded and compared (cosine similarity)
with the embeddings of the test concepts, none of which was trained on; top-1 and top-5 identification
accuracy (chance 0.5 % and 2.5 % for 200-way). Two settings: intra-subject (train and test on one subject)
and leave-one-subject-out (train on the other subjects' training split, test on the held-out subject).

Here:

- **Embedding space** (:data:`EMBEDDING_SPACE`): the MiniLM text embedding of the concept name (all-MiniLM-L6-v2,
  :func:`neuroimagen.data.captions.embed_names`), the concept read from the image metadata's folder
  (``'00011_alarm_clock'`` -> ``'alarm clock'``). The peers use CLIP image features of the test images.
- **Encoder**: :class:`~neuroimagen.models.EEGEncoder` (its EEGNet-style ``conv`` trunk) built for the data's
  montage and rate from the file (17 channels x 100 samples at 100 Hz for the official files), output in the
  384-d embedding space, L2-normalised.
- **Loss**: symmetric InfoNCE over a batch with a learnable temperature (NICE, after CLIP); trials of the same
  concept in a batch are all positives of each other (10 images per concept would otherwise be negatives).
- **Training trials**: the 4 repetitions of each training image averaged (``average_training=True``, as NICE
  trains) or each repetition a trial (False, as ATM). Fixed epochs, no model selection on the test split.
- **Normalisation**: :class:`Whitener` (per-channel mean and a ZCA channel whitening) fitted on the training
  trials only: the test split never enters any statistic (the peers' published code whitens with covariances
  that average training and test sessions).

Command line (the real data: the official preprocessed folder with image_metadata.npy beside it, or
``--metadata``)::

    python -m neuroimagen.evaluation.zero_shot --data DIR --subjects 1-10 --out reports/things
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

EMBEDDING_SPACE = ("MiniLM text embedding of the concept name: all-MiniLM-L6-v2 token states (32 tokens, "
                   "padded), mean-pooled over all 32 positions, padding included (not the sentence-transformers "
                   "embedding, which averages the real tokens only), L2-normalised "
                   "(neuroimagen.data.captions.embed_names)")
# Published 200-way zero-shot identification on THINGS-EEG2 (test trials averaged over 80 repetitions),
# intra-subject means over the 10 subjects, CLIP image-feature space (as cited in issue 24 / PAPER.md).
PUBLISHED = {"NICE": {"top1": 15.6, "top5": 42.8}, "MUSE": {"top1": 19.3, "top5": 48.8},
             "UBP": {"top1": 50.9, "top5": 79.7}}


# ----------------------------------------------------------------------------------------------- normalisation
@dataclass
class Whitener:
    """Per-channel mean and ZCA channel whitening, fitted on training trials only.

    ``mean`` (n_chans,), ``matrix`` (n_chans, n_chans): ``transform(x) = matrix @ (x - mean)`` per time point.
    ``n_fitted``: the trials the statistics come from (for the record).
    """

    mean: np.ndarray
    matrix: np.ndarray
    n_fitted: int

    @classmethod
    def fit(cls, eeg: np.ndarray, shrinkage: float = 1e-3) -> Whitener:
        """Statistics of training trials ``eeg`` (n_trials, n_chans, n_times)."""
        x = np.asarray(eeg, dtype=np.float64)
        if x.ndim != 3 or len(x) < 2:
            raise ValueError(f"Whitener.fit expects training trials (n_trials >= 2, n_chans, n_times), got shape "
                             f"{x.shape}.")
        mean = x.mean(axis=(0, 2))
        xc = x - mean[None, :, None]
        cov = np.einsum("nct,ndt->cd", xc, xc) / (xc.shape[0] * xc.shape[2])
        cov += shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        vals, vecs = np.linalg.eigh(cov)
        return cls(mean=mean, matrix=(vecs / np.sqrt(vals)) @ vecs.T, n_fitted=len(x))

    def transform(self, eeg: np.ndarray) -> np.ndarray:
        """Whitened trials, float32 (n, n_chans, n_times)."""
        x = np.asarray(eeg, dtype=np.float64) - self.mean[None, :, None]
        return np.einsum("cd,ndt->nct", self.matrix, x).astype(np.float32)


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Trials:
    """Trials of one or more subjects: ``eeg`` (n, n_chans, n_times), ``concepts`` (n,) concept names."""

    eeg: np.ndarray
    concepts: list[str]
    ch_names: list[str]
    sfreq: float
    tmin: float = 0.0


def load_trials(data_dir, subjects: list[int], split: str, average: bool, metadata=None) -> Trials:
    """One split of ``subjects`` through :func:`~neuroimagen.data.load_things_eeg2`, concatenated."""
    from neuroimagen.data import load_things_eeg2

    parts = [load_things_eeg2(data_dir, s, split, average_repetitions=average, image_metadata=metadata)
             for s in subjects]
    first = parts[0]
    if first.concept_names is None:
        raise FileNotFoundError(f"No image metadata for {data_dir}: the protocol needs each image's concept; put "
                                f"image_metadata.npy in the data folder or pass --metadata.")
    for p in parts[1:]:
        if p.ch_names != first.ch_names or p.sfreq != first.sfreq or p.n_times != first.n_times:
            raise ValueError(f"Subject {p.subject} has another montage or rate than subject {first.subject}: "
                             f"{p.n_chans} channels at {p.sfreq} Hz vs {first.n_chans} at {first.sfreq} Hz.")
    eeg = np.concatenate([p.eeg for p in parts]).astype(np.float32)
    concepts = [c for p in parts for c in p.concept_names for _ in range(p.n_repetitions)]
    return Trials(eeg, concepts, list(first.ch_names), first.sfreq, first.tmin)


_EMBEDDINGS: dict[str, np.ndarray] = {}


def concept_embeddings(names: list[str]) -> np.ndarray:
    """:data:`EMBEDDING_SPACE` embeddings of ``names`` (n, 384), computed once per name in this process."""
    from neuroimagen.data.captions import embed_names

    new = sorted(set(names) - set(_EMBEDDINGS))
    for n, e in zip(new, embed_names(new), strict=True):
        _EMBEDDINGS[n] = e
    return np.stack([_EMBEDDINGS[n] for n in names]) if names else np.zeros((0, 384))


# ----------------------------------------------------------------------------------------------- model
@dataclass
class ZeroShotConfig:
    """Training of the EEG encoder (defaults: what reports/things-sim used)."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    temperature: float = 0.07  # initial; learnt
    dropout: float = 0.25
    average_training: bool = True  # average each training image's repetitions (NICE) or keep them apart (ATM)
    seed: int = 0


def infonce(z: torch.Tensor, t: torch.Tensor, concept: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of EEG embeddings ``z`` and their targets ``t`` (both (B, D), unit norm); rows of the
    same ``concept`` are positives of each other."""
    logits = logit_scale.exp() * z @ t.T
    pos = concept[:, None] == concept[None, :]
    loss = 0.0
    for lg in (logits, logits.T):
        loss = loss + (torch.logsumexp(lg, dim=1) - torch.logsumexp(lg.masked_fill(~pos, -math.inf), dim=1)).mean()
    return loss / 2


def train_encoder(x: np.ndarray, concept_ids: np.ndarray, targets: np.ndarray, ch_names: list[str], sfreq: float,
                  cfg: ZeroShotConfig, log=None, tmin: float = 0.0):
    """Train an :class:`~neuroimagen.models.EEGEncoder` from whitened trials ``x`` (n, C, T) with InfoNCE to
    ``targets[concept_ids]`` (targets: (n_concepts, D), unit norm). The encoder records the data's channels,
    rate and first sample's time ``tmin``. Returns the encoder (eval mode)."""
    with torch.random.fork_rng():  # weight init and dropout draw from torch's global generator: keep it local
        torch.manual_seed(cfg.seed)
        return _train_encoder(x, concept_ids, targets, ch_names, sfreq, cfg, log, tmin)


def _train_encoder(x, concept_ids, targets, ch_names, sfreq, cfg: ZeroShotConfig, log, tmin: float):
    from neuroimagen.models import EEGEncoder
    from neuroimagen.models.eeg_encoder import input_pool_for

    gen = torch.Generator().manual_seed(cfg.seed)
    enc = EEGEncoder(n_chans=x.shape[1], n_times=x.shape[2], sfreq=float(sfreq), ch_names=list(ch_names),
                     arch="conv", embed_dim=targets.shape[1], pool=input_pool_for(sfreq), dropout=cfg.dropout,
                     tmin=float(tmin))
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)))
    opt = torch.optim.AdamW([*enc.parameters(), logit_scale], lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, ct, tt = torch.from_numpy(x), torch.from_numpy(concept_ids), torch.from_numpy(targets).float()
    enc.train()
    for epoch in range(cfg.epochs):
        perm, total = torch.randperm(len(xt), generator=gen), 0.0
        for i in range(0, len(xt), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            if len(b) < 2:
                continue
            loss = infonce(enc(xt[b]), tt[ct[b]], ct[b], logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                logit_scale.clamp_(0.0, math.log(100.0))
            total += float(loss.detach()) * len(b)
        if log and (epoch + 1) % 10 == 0:
            log(f"  epoch {epoch + 1}/{cfg.epochs}: loss {total / len(xt):.3f}")
    return enc.eval()


@torch.no_grad()
def identify(enc, x: np.ndarray, candidates: np.ndarray, true_index: np.ndarray) -> dict:
    """Top-1 / top-5 identification (%) of each trial ``x`` among ``candidates`` (n_way, D) by cosine
    similarity; ``true_index``: each trial's row of ``candidates``."""
    z = enc(torch.from_numpy(x)).numpy()
    sims = z @ candidates.T
    if not np.isfinite(sims).all():
        raise ValueError("The encoder gave non-finite similarities (NaN or inf): the EEG or the trained encoder is "
                         "broken (e.g. a NaN in the data file); no identification can be scored.")
    # 0 = the true one is the best; a tie counts against it (a constant encoder scores chance, not 100 %)
    rank = (sims >= sims[np.arange(len(x)), true_index][:, None]).sum(axis=1) - 1
    return {"top1": round(100 * float((rank < 1).mean()), 2), "top5": round(100 * float((rank < 5).mean()), 2),
            "n_way": int(len(candidates)), "n_test": int(len(x))}


def zero_shot(train: Trials, test: Trials, cfg: ZeroShotConfig, shuffle_labels: bool = False, log=None) -> dict:
    """Train on ``train`` and identify ``test`` (trials averaged per image) among the test concepts.

    ``shuffle_labels``: the training trials' concepts permuted (by image, keeping trials of an image together),
    a check that the protocol gives chance when the EEG does not tell the concept.
    """
    if set(train.concepts) & set(test.concepts):
        shared = sorted(set(train.concepts) & set(test.concepts))
        raise ValueError(f"Not a zero-shot split: {len(shared)} test concepts are also in training "
                         f"({', '.join(shared[:5])}).")
    if train.ch_names != test.ch_names or train.sfreq != test.sfreq:
        raise ValueError("Training and test trials have different channels or rates.")
    names = sorted(set(train.concepts))
    ids = np.searchsorted(names, train.concepts)
    if shuffle_labels:
        ids = np.random.default_rng(cfg.seed).permutation(len(names))[ids]
    whitener = Whitener.fit(train.eeg)  # training trials only
    enc = train_encoder(whitener.transform(train.eeg), ids.astype(np.int64), concept_embeddings(names),
                        train.ch_names, train.sfreq, cfg, log, train.tmin)
    test_names = sorted(set(test.concepts))
    if len(test_names) != len(test.eeg):
        raise ValueError(f"{len(test.eeg)} test images but {len(test_names)} distinct test concepts: the protocol "
                         "identifies each test image among the test concepts, one image per concept (THINGS-EEG2: "
                         "200 of each).")
    out = identify(enc, whitener.transform(test.eeg), concept_embeddings(test_names),
                   np.searchsorted(test_names, test.concepts))
    out.update(n_train_trials=int(len(train.eeg)), n_train_concepts=len(names))
    return out


def _mean(results: dict) -> dict:
    return {k: round(float(np.mean([r[k] for r in results.values()])), 2) for k in ("top1", "top5")}


def run_protocol(data_dir, subjects: list[int], modes=("intra", "loso"), cfg: ZeroShotConfig | None = None,
                 metadata=None, shuffle_labels: bool = False, log=None) -> dict:
    """The protocol on ``subjects`` of a THINGS-EEG2 folder: per subject and mean, for each of ``modes``
    (``"intra"``: train on the subject; ``"loso"``: train on the others)."""
    cfg = cfg or ZeroShotConfig()
    log = log or (lambda msg: None)
    if "loso" in modes and len(subjects) < 2:
        raise ValueError(f"Leave-one-subject-out needs at least 2 subjects, got {subjects}.")
    train = {s: load_trials(data_dir, [s], "training", cfg.average_training, metadata) for s in subjects}
    test = {s: load_trials(data_dir, [s], "test", True, metadata) for s in subjects}
    out: dict = {}
    for mode in modes:
        per = {}
        for s in subjects:
            t0 = time.perf_counter()
            tr = train[s] if mode == "intra" else _concat([train[o] for o in subjects if o != s])
            per[str(s)] = zero_shot(tr, test[s], cfg, shuffle_labels, log)
            log(f"{mode} subject {s}: top-1 {per[str(s)]['top1']:.1f} %, top-5 {per[str(s)]['top5']:.1f} % "
                f"({time.perf_counter() - t0:.0f} s)")
        out[mode] = {"per_subject": per, "mean": _mean(per)}
    return out


def _concat(parts: list[Trials]) -> Trials:
    return Trials(np.concatenate([p.eeg for p in parts]), [c for p in parts for c in p.concepts],
                  parts[0].ch_names, parts[0].sfreq, parts[0].tmin)


# ----------------------------------------------------------------------------------------------- report
def write_report(results: dict, out, data_dir, subjects: list[int], cfg: ZeroShotConfig, command: str,
                 seconds: float, shuffle_labels: bool = False) -> dict:
    """``out/zero_shot.json`` (everything) and ``out/zero_shot.md`` (the table beside the published numbers)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim_file = Path(data_dir) / "simulation.json"
    simulation = json.loads(sim_file.read_text()) if sim_file.is_file() else None
    report = {"protocol": {"task": "zero-shot identification of test concepts absent from training",
                           "embedding_space": EMBEDDING_SPACE,
                           "test_trials": "averaged over all repetitions of each test image",
                           "training_trials": "repetitions averaged per image" if cfg.average_training
                           else "each repetition a trial",
                           "normalisation": "per-channel mean + ZCA whitening fitted on training trials only",
                           "shuffled_labels": shuffle_labels},
              "data": {"dir": str(data_dir), "subjects": subjects, "simulated": simulation is not None,
                       "simulation": simulation},
              "config": asdict(cfg), "results": results, "published": PUBLISHED, "command": command,
              "seconds": round(seconds, 1)}
    (out / "zero_shot.json").write_text(json.dumps(report, indent=1))
    (out / "zero_shot.md").write_text(_markdown(report))
    return report


def _markdown(report: dict) -> str:
    sim = report["data"]["simulation"]
    n_way = next(iter(next(iter(report["results"].values()))["per_subject"].values()))["n_way"]
    where = (f"simulated data (preset `{sim['preset']}`, {sim['train_concepts']} training concepts x "
             f"{sim['images_per_concept']} images x {sim['train_reps']} repetitions, {sim['test_concepts']} test "
             f"concepts x {sim['test_reps']} repetitions)" if sim else f"the data in `{report['data']['dir']}`")
    lines = [f"# Zero-shot identification ({n_way}-way)", "",
             f"Ours are on {where}; subjects {report['data']['subjects']}. Embedding space: "
             f"{report['protocol']['embedding_space']}. Published numbers are on the real THINGS-EEG2 (10 subjects, "
             "CLIP image features), cited, not rerun.", "",
             "| | top-1 % | top-5 % | data |", "|---|---|---|---|"]
    label = {"intra": "ours, intra-subject (mean)", "loso": "ours, leave-one-subject-out (mean)"}
    for mode, r in report["results"].items():
        lines.append(f"| {label[mode]} | {r['mean']['top1']:.1f} | {r['mean']['top5']:.1f} | "
                     f"{'simulated' if sim else 'as given'} |")
    for name, r in report["published"].items():
        lines.append(f"| {name} | {r['top1']:.1f} | {r['top5']:.1f} | real, intra-subject |")
    lines += ["", f"Chance: {100 / n_way:.1f} % top-1, {min(100.0, 500 / n_way):.1f} % top-5.", "",
              "Per subject:", "", "| mode | subject | top-1 % | top-5 % |", "|---|---|---|---|"]
    for mode, r in report["results"].items():
        for s, v in r["per_subject"].items():
            lines.append(f"| {mode} | {s} | {v['top1']:.1f} | {v['top5']:.1f} |")
    lines += ["", f"Command: `{report['command']}` ({report['seconds']:.0f} s)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from neuroimagen.data.simulate import parse_subjects

    p = argparse.ArgumentParser(prog="python -m neuroimagen.evaluation.zero_shot", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="THINGS-EEG2 preprocessed folder (sub-XX/; image_metadata.npy)")
    p.add_argument("--metadata", default=None, help="image_metadata.npy (default: DATA/image_metadata.npy)")
    p.add_argument("--subjects", default="1-2", help="subjects ('1-10', '1,3') (default: 1-2)")
    p.add_argument("--modes", default="intra,loso", help="intra, loso or both (default: intra,loso)")
    p.add_argument("--out", required=True, help="folder for zero_shot.json and zero_shot.md")
    p.add_argument("--epochs", type=int, default=ZeroShotConfig.epochs)
    p.add_argument("--batch-size", type=int, default=ZeroShotConfig.batch_size)
    p.add_argument("--lr", type=float, default=ZeroShotConfig.lr)
    p.add_argument("--no-train-average", action="store_true",
                   help="train on every repetition (ATM) instead of each image's average (NICE)")
    p.add_argument("--shuffle-labels", action="store_true", help="permute training concepts: must give chance")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    for m in modes:
        if m not in ("intra", "loso"):
            p.error(f"--modes: expected 'intra' and/or 'loso', got {m!r}")
    cfg = ZeroShotConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         average_training=not args.no_train_average, seed=args.seed)
    subjects = parse_subjects(args.subjects)
    t0 = time.perf_counter()
    results = run_protocol(args.data, subjects, modes, cfg, args.metadata, args.shuffle_labels, log=print)
    command = "python -m neuroimagen.evaluation.zero_shot " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(results, args.out, args.data, subjects, cfg, command, time.perf_counter() - t0, args.shuffle_labels)
    print((Path(args.out) / "zero_shot.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
