"""What the page shows, as markdown and pictures (no Gradio here): the trial's facts, its butterfly plots and
topomap, how its channels were read, the accuracy to expect from its cap, the decoded captions, and the
messages of the empty panels."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import PIL.Image

from neuroimagen.data.classes import CLASS_NAMES

from .settings import CAP_METRICS, TMIN
from .trials import LoadedTrial

NO_UPLOAD = ("**No trial uploaded yet.** Drop one EEG trial file in the upload box (with its companion files), "
             "or click one of the example files: its EEG shows here, and Reconstruct uses it.")
UNREADABLE = ("**This trial could not be read**: the error message says why. Upload another file or pick "
              "another trial; Reconstruct uses what this panel shows.")
NO_RESULTS = "Press **Reconstruct**: the results of the trial shown appear here."
RUNNING = "Reconstructing the trial shown…"
FAILED = "**The reconstruction failed**: the error message says why. Nothing shown here is stale."
EMPTY_RESULTS = (None, None, None, "", None, None, "", None, "", NO_RESULTS)  # as events' ``results``, title last


def figure_to_image(fig, dpi: int = 100) -> PIL.Image.Image:
    """Render a matplotlib Figure to an RGB image and free the figure (no pyplot, no temp file)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    finally:
        fig.clear()
    buf.seek(0)
    img = PIL.Image.open(buf)
    img.load()
    return img.convert("RGB")



def trial_facts(trial: LoadedTrial, expected: str | None = None) -> str:
    """A markdown table: the trial as read and as the model sees it; then how its channels were covered
    (``info["coverage"]``) and, given, the expected accuracy for its channel count."""
    r, m = trial.raw, trial.model
    label = trial.label
    subject = getattr(r, "subject", None)
    lines = [f"**{trial.name}**", "",
             f"subject: **{subject if subject is not None else 'unknown'}** · true class: "
             f"**{CLASS_NAMES[label] if label is not None else 'unknown'}**", "",
             "| | channels | sampling rate | duration |", "|---|---|---|---|"]
    lines += [f"| {what} | {len(t.ch_names)} | {t.sfreq:g} Hz | {1000 * t.data.shape[-1] / t.sfreq:.0f} ms |"
              for what, t in (("as read", r), ("model input", m))]
    coverage = m.info.get("coverage") if isinstance(m.info, dict) else None
    if coverage:
        lines += ["", f"**Channels**: {coverage}."]
    if expected:
        lines += ["", expected]
    notes = [info.get(k) for info in (r.info, m.info) if isinstance(info, dict)
             for k in ("assumed", "note", "resampled", "cropped")]
    lines += [f"\n*{n}*" for n in dict.fromkeys(n for n in notes if n)]
    return "\n".join(lines)


def choose_event_text(file_name: str, events: dict[str, np.ndarray], refusal: str) -> str:
    """The EEG panel of a recording with events and none chosen: its events, and what to do."""
    lines = [f"**upload {file_name}**: choose an event", "", f"*{refusal}*", "",
             "Pick the **Event** that marks stimulus onset (t = 0) under the upload box, then an **Occurrence** or "
             "**Average all occurrences**: nothing is chosen for you.", "",
             "| event | occurrences | first onsets (s) |", "|---|---|---|"]
    for name, onsets in events.items():
        first = ", ".join(f"{t:.2f}" for t in onsets[:4]) + (" …" if len(onsets) > 4 else "")
        lines.append(f"| {name.replace('|', '/')} | {len(onsets)} | {first} |")
    return "\n".join(lines)



def expected_accuracy(n_chans: int, metrics_path: str | Path = CAP_METRICS) -> dict[str, float] | None:
    """The top-1 to expect from a cap of ``n_chans`` channels, by group (``"new subjects"``, ``"trained
    subjects"``), interpolated linearly in the channel count between the caps measured.

    ``metrics_path`` is ``scripts/cap_accuracy.py``'s ``metrics.json``: ``{"caps": {name: {"n_chans": 32,
    "trained subjects": {"top1": 0.9, ...}, "new subjects": {...}}}}``; caps of the same size are averaged.
    Above the largest cap measured its value is taken (the model uses 128 channels); below the smallest, or
    without the file, ``None``: nothing is said that was not measured.
    """
    try:
        caps = json.loads(Path(metrics_path).read_text())["caps"]
        by_group: dict[str, dict[int, list[float]]] = {}
        for cap in caps.values():
            for group in ("new subjects", "trained subjects"):
                if isinstance(cap.get(group), dict) and "top1" in cap[group]:
                    by_group.setdefault(group, {}).setdefault(int(cap["n_chans"]), []).append(
                        float(cap[group]["top1"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    out = {}
    for group, points in by_group.items():
        xs = sorted(points)
        if n_chans < xs[0]:
            continue
        out[group] = float(np.interp(n_chans, xs, [float(np.mean(points[x])) for x in xs]))
    return out or None


def expected_accuracy_text(model_trial, metrics_path: str | Path = CAP_METRICS) -> str:
    """One line for the EEG panel: the expected top-1 for the trial's channel count (``n_used``)."""
    rep = model_trial.info.get("channels") if isinstance(model_trial.info, dict) else None
    n = int(rep.get("n_used", 0)) if rep else 0
    if not n:
        return ""
    acc = expected_accuracy(n, metrics_path)
    head = f"**Expected accuracy** ({n} channels): "
    if acc is None:
        why = "no cap this small was measured" if Path(metrics_path).is_file() else "reports/caps/demo is not there"
        return head + f"not measured ({why})."
    main = acc.get("new subjects", acc.get("trained subjects"))
    text = head + f"about {100 * main:.0f} % top-1 on simulated trials (demo preset)"
    if "new subjects" in acc:
        text += " of people the model never saw"
        if "trained subjects" in acc:
            text += f"; {100 * acc['trained subjects']:.0f} % for those it was trained on"
    return text + "."


def plot_window(trial: LoadedTrial, time_ms: float):
    """The butterfly plots: the window as read (onset at t = 0 marked, the model's part shaded), then the
    model input (band-passed, z-scored, the topomap's latency marked). A Figure."""
    from matplotlib.figure import Figure

    from neuroimagen.viz import plot_eeg

    r, m = trial.raw, trial.model
    fig = Figure(figsize=(8.0, 5.6))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.94, bottom=0.08, hspace=0.45)  # not constrained: 2x faster
    ax_read, ax_model = fig.subplots(2, 1)
    data = np.asarray(r.data, dtype=np.float64)
    volts = np.nanmax(np.abs(data)) < 1e-2 if data.size else False  # MNE formats and our .npz: volts
    note = (r.info or {}).get("note", "").split(", ")[0]  # "occurrence 2 of 5 of 'stimulus'", "epoch 1 of 3"
    plot_eeg(data, r.sfreq, _unique(list(r.ch_names)), axes=ax_read, tmin=float(r.tmin),
             units="µV" if volts else "file units", scale=1e6 if volts else 1.0,
             title="As read" + (f": {note}" if note else ""))
    crop_end = TMIN + m.data.shape[1] / m.sfreq
    ax_read.axvspan(TMIN, crop_end, color="tab:blue", alpha=0.08, zorder=0)
    ax_read.axvline(0.0, color="crimson", linewidth=1.5, zorder=5, clip_on=False)  # over the frame at tmin = 0
    # Labels at the bottom, apart: "onset" beside its line (left of it when there is time before onset), "model
    # input" at the right end of its shade.
    before = float(r.tmin) < 0
    ax_read.annotate("onset", (0.0, 0.0), xycoords=("data", "axes fraction"), xytext=(-3 if before else 3, 4),
                     textcoords="offset points", ha="right" if before else "left", color="crimson", fontsize=9)
    ax_read.annotate("model input", (crop_end, 0.0), xycoords=("data", "axes fraction"), xytext=(-3, 4),
                     textcoords="offset points", ha="right", color="tab:blue", fontsize=8)
    plot_eeg(m.data, m.sfreq, list(m.ch_names), axes=ax_model, tmin=TMIN, units="z (a.u.)", time_s=time_ms / 1000,
             title="Model input (band-passed, z-scored)")
    ax_model.set_xlim(ax_read.get_xlim())  # one time axis: the model's part sits under its shade
    n_ave = int((r.info or {}).get("n_averaged") or 1)
    for text in (t for ax in (ax_read, ax_model) for t in ax.texts if "ave" in t.get_text()):
        text.set_text(f"{n_ave} averaged" if n_ave > 1 else "single trial")  # MNE's N_ave of an EvokedArray is 1
    return fig


def _unique(names: list[str]) -> list[str]:
    """Channel names made unique for plotting (a file may repeat one)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def channel_report(trial) -> str:
    """How the channels were read (``info["channels"]["scheme"]``), and which were mapped onto the model
    montage, interpolated or dropped."""
    rep = trial.info.get("channels") if isinstance(trial.info, dict) else None
    if not rep:
        return "Channel mapping: not reported."
    lines = [f"- **read as**: {rep['scheme']}"] if rep.get("scheme") else []
    for key in ("mapped", "interpolated", "dropped"):
        items = rep.get(key, [])
        if isinstance(items, dict):  # e.g. interpolated: {"Oz": "flat"}
            names = [f"{k} ({v})" for k, v in items.items()]
        else:
            names = [str(x) for x in items]
        shown = ", ".join(names[:12]) + (f", … (+{len(names) - 12})" if len(names) > 12 else "")
        lines.append(f"- **{key}** ({len(names)}): {shown or '—'}")
    return "\n".join(lines)


# The detailed captions describe how a stimulus was drawn in the words of its generator
# (neuroimagen.data.stimuli.detailed_caption); the app shows them in plainer words. Display only: the model is
# conditioned on the caption bank's own text and states, which the "Decoded caption" box shows as they are.
PLAIN_WORDS = {"mirrored": "flipped left to right"}


def plain_caption(text: str) -> str:
    """A caption for display, in plain words (``PLAIN_WORDS``)."""
    for word, plain in PLAIN_WORDS.items():
        text = re.sub(rf"\b{word}\b", plain, text)
    return text


def captions_table(out) -> str:
    """Top-5 label captions (probability) and detailed captions (similarity) as markdown."""
    lines = ["| decoded caption | probability |", "|---|---|"]
    lines += [f"| {plain_caption(text)} | {score:.3f} |" for text, score in out.captions[0]]
    if getattr(out, "detailed_captions", None):
        lines += ["", "| nearest detailed caption | similarity |", "|---|---|"]
        lines += [f"| {plain_caption(text)} | {score:.3f} |" for text, score in out.detailed_captions[0]]
    return "\n".join(lines)



def topomap_image(trial: LoadedTrial, time_ms: float) -> PIL.Image.Image:
    """The topomap of the model input at ``time_ms`` (clipped to the model's window)."""
    from neuroimagen.viz import plot_topomap

    m = trial.model
    t = float(np.clip(float(time_ms) / 1000, TMIN, TMIN + (m.data.shape[1] - 1) / m.sfreq))
    return figure_to_image(plot_topomap(m.data, m.sfreq, list(m.ch_names), t, tmin=TMIN, units="z (a.u.)"))


def eeg_views(trial: LoadedTrial, time_ms: float, cap_metrics: str | Path = CAP_METRICS) -> tuple:
    """(facts markdown, butterfly image, topomap image, channel report markdown, stimulus) of a trial; the
    expected accuracy for its cap is said for a file (an upload), not for the model's own montage."""
    expected = expected_accuracy_text(trial.model, cap_metrics) if trial.raw.info.get("file") else None
    return (trial_facts(trial, expected), figure_to_image(plot_window(trial, time_ms)),
            topomap_image(trial, time_ms), channel_report(trial.model), trial.stimulus)



def result_notes(out, seed: int, steps: int, strength: float, guidance_scale: float, seconds: float,
                 device) -> str:
    """The pipeline's notes and how the reconstruction ran, as a markdown list."""
    notes = list(out.notes) + [f"Seed {seed}; {steps} steps at strength {strength:g} (img2img runs "
                               f"{int(steps * strength)}), guidance {guidance_scale:g}; {seconds:.2f} s on {device}."]
    return "\n".join(f"- {n}" for n in notes)


RECONSTRUCTION_LABEL = "Reconstruction"
SALIENCY_LABEL = "Saliency map"  # short: the stages' labels sit on one line above their pictures
START_LABEL = "Start image"
STAGES_NOTE = ("The saliency map is the generator's, decoded from the EEG; the start image is what the diffusion "
               "starts from: that map with a typical drawing of the decoded class painted in where the EEG says "
               "the object was (the layout prior; the map itself when it is off).")
GUESS_LABEL = "The model's guess (not a reconstruction)"
FOREIGN_BANNER = "The model has not seen EEG like this"  # the results' banner for out-of-distribution EEG  # the picture's label when the EEG is out of distribution


def is_foreign(out) -> bool:
    """Whether the pipeline's decoding check found the (first) trial unlike the EEG the model was trained on."""
    return out.in_distribution is not None and not bool(out.in_distribution[0])


def decoding_verdict(out) -> str:
    """The decoded class with its calibrated confidence, after a banner when the EEG is out of distribution
    (the pipeline's decoding check); empty for a checkpoint without one (the notes say so)."""
    if out.confidence is None:
        return ""
    top = CLASS_NAMES[int(np.argmax(out.class_probs[0]))]
    line = (f"Decoded class: **{top}**, confidence {100 * float(out.confidence[0]):.0f} % (calibrated on "
            "validation trials).")
    if is_foreign(out):
        line = (f"> ⚠️ **{FOREIGN_BANNER}**: its distance to the training trials is "
                f"{float(out.ood_score[0]):.2f}, above the {out.ood_threshold:.2f} that 95 % of validation trials "
                "stay under. The picture is the model's guess for its top class, not a reconstruction of what "
                "was seen.\n\n" + line)
    return line


def result_title(trial: LoadedTrial, out=None) -> str:
    """The results' title: the trial they are of, its true class when known, and (given the pipeline's output)
    the decoded class with its confidence, after a banner when the trial is out of distribution."""
    label = trial.label
    title = f"Reconstructed from **{trial.name}**" + (f" (true class: {CLASS_NAMES[label]})"
                                                       if label is not None else "")
    verdict = decoding_verdict(out) if out is not None else ""
    return title + (f"\n\n{verdict}" if verdict else "")
