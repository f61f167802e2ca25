"""Event handlers: widget values in, one library call, display values out (the names of their parameters are
the API's).

The trial comes from ``trials.Trials`` (examples, uploads, the simulator), what the page shows from ``views``;
errors become ``gr.Error`` through ``errors.user_errors``.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import OrderedDict

import gradio as gr
import numpy as np
import torch

from neuroimagen.data import TrialFileError
from neuroimagen.data.classes import CLASS_NAMES

from .errors import USER_ERRORS, user_errors
from .settings import (
    CAP_METRICS,
    CAPTION_SOURCE,
    DEFAULT_CLASS,
    DEFAULT_LATENCY_MS,
    EPOCHS_SUFFIXES,
    GUIDANCE_SCALE,
    MAX_SEED,
    NUM_INFERENCE_STEPS,
    STRENGTH,
)
from .startup import on_gpu
from .trials import LoadedTrial, Trials, as_list, int_in, trial_key, upload_paths
from .views import (
    EMPTY_RESULTS,
    FAILED,
    FOREIGN_BANNER,
    GUESS_LABEL,
    NO_UPLOAD,
    RECONSTRUCTION_LABEL,
    RUNNING,
    UNREADABLE,
    captions_table,
    choose_event_text,
    eeg_views,
    result_notes,
    result_title,
    topomap_image,
)

N_VIEWS = 7  # a trial load's outputs: source, facts, butterfly, topomap, channels, stimulus, state
# The paper's ablation, one condition left out: mode, label, call overrides (the paper's "saliency map only" is the
# generator's map without the layout prior, whose template is the decoded class: the caption's side)
ABLATIONS = (("saliency_only", "saliency map only", {"layout_weight": 0.0}), ("caption_only", "caption only", {}))


class SelectedTabs:
    """Which tab ("example", "upload", "simulate") each browser session has selected, as its ``tab.select``
    reported it: the trial loads of the other tabs that end later change nothing on that page.

    Without it the last load to *finish* would be shown, not the last one asked for: loads run two at a time
    (``default_concurrency_limit``) and wait in a queue, and Gradio 6.31 even selects the first tab when a page
    opens (a second load beside ``demo.load``), so an example could replace "No trial uploaded" after the user
    chose Upload, and Reconstruct then ran the example. API sessions select no tab and are never stale.
    Bounded (the oldest sessions are forgotten first) and emptied as pages close (``demo.unload``).
    """

    def __init__(self, max_sessions: int = 4096):
        self._tabs: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    @staticmethod
    def _session(request) -> str | None:
        return getattr(request, "session_hash", None) if request is not None else None

    def select(self, request, source: str) -> None:
        session = self._session(request)
        if session is None:
            return
        with self._lock:
            self._tabs[session] = source
            self._tabs.move_to_end(session)
            while len(self._tabs) > self.max_sessions:
                self._tabs.popitem(last=False)

    def stale(self, request, source: str) -> bool:
        """Whether the session of ``request`` has selected a tab other than ``source``."""
        session = self._session(request)
        with self._lock:
            selected = self._tabs.get(session) if session is not None else None
        return selected is not None and selected != source

    def forget(self, request) -> None:
        session = self._session(request)
        with self._lock:
            self._tabs.pop(session, None)



def skip_views() -> tuple:
    """A trial load's outputs that change nothing on the page."""
    return tuple(gr.skip() for _ in range(N_VIEWS))


def occurrence_slider(n: int) -> gr.Slider:
    """The Occurrence slider for an event with ``n`` occurrences (shown only when there is a choice)."""
    return gr.Slider(minimum=1, maximum=max(n, 2), value=1, visible=n > 1,
                     info=f"which of the {n} to cut the trial at" if n > 1 else None)


class Handlers:
    """The app's event handlers around one loaded pipeline (shared by all sessions through the queue)."""

    def __init__(self, pipe, examples_dir=None, stimuli_dir=None, cap_metrics=None):
        self.pipe = pipe
        self.trials = Trials(examples_dir, stimuli_dir, pipe.eeg_preprocess_kwargs)  # uploads onto the model's channels
        self.cap_metrics = CAP_METRICS if cap_metrics is None else cap_metrics
        self.tabs = SelectedTabs()
        # The one handler that runs the pipeline (the button's, the API's and the ablation box's run): on a ZeroGPU
        # Space it holds a GPU while it runs; without the ``spaces`` package it is left as it is.
        self.reconstruct = on_gpu(self.reconstruct)

    def eeg_views(self, trial: LoadedTrial, time_ms: float) -> tuple:
        """(facts markdown, butterfly image, topomap image, channel report markdown, stimulus)."""
        return eeg_views(trial, time_ms, self.cap_metrics)

    # ---------------------------------------------------------------------------------------------
    # Tabs: which trial a page shows
    def pick_example(self, evt: gr.SelectData) -> str:
        """The example name of the clicked gallery image."""
        return self.trials.gallery[evt.index].name

    def tab_selector(self, source: str):
        """The ``tab.select`` handler of the tab ``source``: records it for the session (see SelectedTabs)."""

        def select_tab(request: gr.Request) -> None:
            self.tabs.select(request, source)

        return select_tab

    def forget_session(self, request: gr.Request) -> None:
        """A page closed: forget its selected tab."""
        self.tabs.forget(request)

    def for_selected_tab(self, source: str, request, load):
        """``load()``'s views, unless the session has selected another tab by the time it ends: then nothing
        on the page changes (every view skipped) and no error is raised, whatever ``load`` did."""
        try:
            views = load()
        except Exception:
            if self.tabs.stale(request, source):
                return skip_views()
            raise
        return skip_views() if self.tabs.stale(request, source) else views

    # ---------------------------------------------------------------------------------------------
    # Trial loads: (source, facts, butterfly, topomap, channels, stimulus, state)
    @user_errors
    def load_example(self, example: str | None = None, time_ms: float = DEFAULT_LATENCY_MS,
                     request: gr.Request = None):
        """Load a shipped example: (source, facts, butterfly, topomap, channels, stimulus, state)."""

        def load():
            trial = self.trials.example(example)
            return ("example", *self.eeg_views(trial, time_ms), trial)

        return self.for_selected_tab("example", request, load)

    @user_errors
    def load_upload(self, files=None, time_ms: float = DEFAULT_LATENCY_MS, event: str | None = None,
                    occurrence: int = 1, average: bool = False, request: gr.Request = None):
        """Load an uploaded trial: (source, facts, butterfly, topomap, channels, stimulus, state).

        A continuous recording with events and no ``event`` chosen is not an error: the panel lists its events
        and asks for one (nothing is chosen for the user); Reconstruct then refuses with the same list.
        """
        return self.for_selected_tab("upload", request,
                                     lambda: self._load_upload(files, time_ms, event, occurrence, average))

    def _load_upload(self, files, time_ms: float, event: str | None, occurrence: int, average: bool):
        if not as_list(files):  # nothing uploaded yet, or the upload widget was cleared
            return ("upload", NO_UPLOAD, None, None, "", None, None)
        try:
            trial = self.trials.upload(files, event, occurrence, average)
        except TrialFileError as err:
            try:
                events = {} if event else self.trials.upload_events(files)
            except USER_ERRORS:
                events = {}
            if not events:
                raise err
            main = upload_paths(files)[0]
            known = self.trials.known_upload(main)
            return ("upload", choose_event_text(main.name, events, str(err)), None, None, "",
                    self.trials.known_stimulus(None, known), None)
        # The session keeps only what the topomap needs (not the raw recording, up to MAX_UPLOAD_BYTES read
        # as float64): sessions live on after the request (Gradio drops their state ~1 h after they close).
        return ("upload", *self.eeg_views(trial, time_ms), LoadedTrial(trial.name, None, trial.model))

    def upload_window(self, files=None):
        """After a new upload: the Event dropdown with its events (none chosen: hidden when there are none),
        the Occurrence slider (an epochs file's epochs), Average unticked, and the events for ``pick_event``.

        Never raises: a file whose events cannot be read gets no window widgets, and its load says why.
        """
        events: dict[str, np.ndarray] = {}
        epochs = False
        if as_list(files):
            try:
                events = self.trials.upload_events(files)
                epochs = upload_paths(files)[0].name.lower().endswith(EPOCHS_SUFFIXES)
            except USER_ERRORS:
                events = {}
        counts = {name: len(onsets) for name, onsets in events.items()}
        choices = [(f"{name} ({n}×)", name) for name, n in counts.items()]
        info = ("which event starts the trial: leave empty for all the epochs" if epochs else
                "which event starts the trial (stimulus onset, t = 0)")
        n_epochs = sum(counts.values()) if epochs else 0
        return (gr.Dropdown(choices=choices, value=None, visible=bool(events), info=info),
                occurrence_slider(n_epochs), gr.Checkbox(value=False, visible=bool(events)),
                {"counts": counts, "epochs": epochs})

    @staticmethod
    def pick_event(event: str | None, window: dict | None):
        """The Occurrence slider for the chosen event: 1 to its number of occurrences (an epochs file without an
        event: its epochs)."""
        window = window or {}
        counts = window.get("counts", {})
        n = counts.get(event, 0) if event else (sum(counts.values()) if window.get("epochs") else 0)
        return occurrence_slider(n)

    @user_errors
    def simulate(self, sim_class: str = CLASS_NAMES[DEFAULT_CLASS], sim_image: int = 1, sim_subject: int = 1,
                 sim_noise: str = "demo", time_ms: float = DEFAULT_LATENCY_MS, request: gr.Request = None):
        """Simulate a trial: (source, facts, butterfly, topomap, channels, stimulus, state)."""

        def load():
            trial = self.trials.simulated(sim_class, sim_image, sim_subject, sim_noise)
            return ("simulate", *self.eeg_views(trial, time_ms), trial)

        return self.for_selected_tab("simulate", request, load)

    @staticmethod
    def no_trial():
        """The EEG panel when the chosen trial could not be read (the error message says why):
        (facts, butterfly, topomap, channels, stimulus, state)."""
        return (UNREADABLE, None, None, "", None, None)

    @user_errors
    def topomap(self, time_ms: float, state: LoadedTrial | None):
        """Redraw the topomap of the loaded trial at ``time_ms``."""
        return None if state is None else topomap_image(state, time_ms)

    # ---------------------------------------------------------------------------------------------
    # Results: (reconstruction, saliency map, start image, caption, class probabilities, seed used, top captions,
    # ablation gallery, notes, title), cleared together; the seen image belongs to the trial and stays.
    @staticmethod
    def show_ablation(ablation: bool):
        """Show the ablation gallery only while its checkbox is ticked."""
        return gr.Gallery(visible=bool(ablation))

    @staticmethod
    def clear_results():
        """Empty results, shown while a reconstruction runs: a failed one leaves nothing stale on screen."""
        return (*EMPTY_RESULTS[:-1], RUNNING)

    @staticmethod
    def clear_results_if(ablation: bool):
        """Empty results when the ablation box was just ticked (its run follows), else leave them."""
        return Handlers.clear_results() if ablation else tuple(gr.skip() for _ in EMPTY_RESULTS)

    @staticmethod
    def picture_label(title: str):
        """The reconstruction's label for the results' title: a guess when the title carries the
        out-of-distribution banner (label only: the picture, and the API's outputs, stay as they are)."""
        return gr.update(label=GUESS_LABEL if FOREIGN_BANNER in str(title or "") else RECONSTRUCTION_LABEL)

    @staticmethod
    def failed_results() -> str:
        """The results title after a reconstruction failed (its outputs were emptied when it started)."""
        return FAILED

    def clear_stale(self, source: str, example: str | None, files, sim_class: str, sim_image, sim_subject,
                    sim_noise: str, event: str | None, occurrence: int, average: bool, result_key: str | None):
        """After a trial is loaded: empty the results unless they are of the trial the widgets now describe
        (a reconstruction of this trial may have finished while it was loading)."""
        key = trial_key(source, example, files, sim_class, sim_image, sim_subject, sim_noise, event, occurrence,
                        average)
        return tuple(gr.skip() for _ in EMPTY_RESULTS) if key == result_key else EMPTY_RESULTS

    @user_errors
    def reconstruct(self, source: str = "example", example: str | None = None, files=None,
                    sim_class: str = CLASS_NAMES[DEFAULT_CLASS], sim_image: int = 1, sim_subject: int = 1,
                    sim_noise: str = "demo", strength: float = STRENGTH, guidance_scale: float = GUIDANCE_SCALE,
                    num_inference_steps: int = NUM_INFERENCE_STEPS, seed: int = 0, randomize_seed: bool = False,
                    caption_source: str = CAPTION_SOURCE, ablation: bool = False, layout_weight: float | None = None,
                    event: str | None = None, occurrence: int = 1, average: bool = False,
                    progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's documented idiom)
        """Reconstruct the seen image from the chosen trial.

        ``event``, ``occurrence`` (1-based) and ``average`` choose the trial of an uploaded recording (see
        :meth:`Trials.upload`); they come last so that callers of the earlier parameters keep working.

        Returns (reconstruction, saliency map, caption, class probabilities, seed used, top-5 captions,
        true stimulus, ablation gallery, notes, title naming the trial), the trial's key for the page, and the start
        image (the saliency map with the decoded class's template drawn in: what the diffusion starts from; the
        saliency map itself without a layout prior). New outputs go last, so existing API callers keep working.
        """
        t0 = time.perf_counter()
        progress(0, desc="Reading the trial")
        widgets = (source, example, files, sim_class, sim_image, sim_subject, sim_noise, event, occurrence, average)
        trial = self.trials(*widgets)
        if randomize_seed:
            seed = int(np.random.default_rng().integers(0, MAX_SEED))
        seed = int_in("seed", seed, 0, MAX_SEED)
        steps = int_in("num_inference_steps", num_inference_steps, 1, 1000)
        kwargs = dict(strength=float(strength), guidance_scale=float(guidance_scale), num_inference_steps=steps,
                      caption_source=caption_source, output_type="pil",
                      layout_weight=None if layout_weight is None else float(layout_weight))
        runs = 1 + len(ABLATIONS) if ablation else 1
        progress(0.05, desc="Decoding the EEG and denoising" + (f" (run 1 of {runs})" if ablation else ""))
        out = self.pipe(trial.model, generator=torch.Generator().manual_seed(seed), mode="both", **kwargs)
        gallery = None
        if ablation:
            # The paper's ablation: same trial, same seed, one condition left out at a time.
            gallery = []
            for k, (mode, label, overrides) in enumerate(ABLATIONS, start=2):
                progress((k - 1) / runs, desc=f"Ablation: {label} (run {k} of {runs})")
                alt = self.pipe(trial.model, generator=torch.Generator().manual_seed(seed), mode=mode,
                                **{**kwargs, **overrides})
                gallery.append((alt.images[0], label))
            gallery.append((out.images[0], "saliency map + caption"))
        probs = {name: float(p) for name, p in zip(CLASS_NAMES, out.class_probs[0])}
        caption = out.caption_used[0] if out.caption_used else out.captions[0][0][0]
        notes = result_notes(out, seed, steps, float(strength), float(guidance_scale), time.perf_counter() - t0,
                             self.pipe.device)
        return (out.images[0], out.saliency_maps[0], caption, probs, seed, captions_table(out), trial.stimulus,
                gallery, notes, result_title(trial, out), trial_key(*widgets), out.start_images[0])

    def reconstruct_if_ablation(self):
        """``reconstruct`` for the ablation checkbox: runs when it is ticked, leaves everything when unticked.

        Same parameters as :meth:`reconstruct` (Gradio reads them, and ``gr.Progress``, from its signature).
        """
        signature = inspect.signature(self.reconstruct)

        @functools.wraps(self.reconstruct)
        def run(*args, **kwargs):
            if not signature.bind(*args, **kwargs).arguments.get("ablation"):
                return tuple(gr.skip() for _ in range(len(EMPTY_RESULTS) + 2))  # + seen image, trial key
            return self.reconstruct(*args, **kwargs)

        return run
