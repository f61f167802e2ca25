"""The app's layout: ``build_demo(pipe)`` returns the ``gr.Blocks``; behaviour lives in ``handlers``.

Gradio 6 takes the theme and CSS in ``launch()``: pass ``**LAUNCH_KWARGS``.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from neuroimagen.data.classes import CLASS_NAMES

from .handlers import (
    DEFAULT_LATENCY_MS,
    IMAGES_PER_CLASS,
    MAX_OCCURRENCES,
    MAX_UPLOAD_BYTES,
    N_SUBJECTS,
    NO_RESULTS,
    NOISE_PRESETS,
    SOURCES,
    TRIAL_EXTENSIONS,
    UPLOAD_EXTENSIONS,
    Handlers,
    model_card,
    model_summary,
    refuse,
    split_model_card,
    upload_examples,
)

CSS = """
.pixelated img { image-rendering: pixelated; }
#stimulus img, #saliency img, #reconstruction img { width: 100%; height: 100%; object-fit: contain; }
/* a laptop screen (1280 x 720) shows the trial, its EEG and the Reconstruct button without scrolling */
#intro h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
#intro p, #simulated-note p { margin: 0; }
.small-print, .small-print p { font-size: var(--text-sm); color: var(--body-text-color-subdued); }
/* galleries: every picture whole, its caption under it rather than over it */
.captions-below > [data-testid="block-label"] { position: static; margin-bottom: var(--spacing-sm); }
.captions-below .grid-wrap { min-height: 0; max-height: none; overflow: visible; padding: 0; }
.captions-below .grid-container { padding-top: 0; grid-auto-rows: auto; grid-template-rows: none;
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)); gap: var(--spacing-md); }
.captions-below .thumbnail-item { aspect-ratio: auto; height: auto; display: flex; flex-direction: column; }
.captions-below .thumbnail-item > img { aspect-ratio: 1 / 1; height: auto; flex: none; }
.captions-below .caption-label { position: static; max-width: 100%; white-space: normal; overflow: visible;
  text-align: center; border: 0; border-radius: 0; background: none; padding: 2px 2px 4px; line-height: 1.15;
  font-size: var(--text-xs); }
#trial-facts p { margin: 0 0 .3rem; font-size: var(--text-sm); }
#model-card-metadata table { font-size: var(--text-sm); width: auto; }
#model-card-metadata th, #model-card-metadata td { padding: 2px 8px; }
/* the stages' labels above their pictures, not over them */
#stage-row [data-testid="block-label"] { position: static; border: 0; box-shadow: none; padding: 0 0 2px;
  font-size: var(--text-sm); white-space: nowrap; }
#stage-row [data-testid="block-label"] > span:first-child { display: none; }
#trial-facts table { font-size: var(--text-sm); margin: 0; }
#trial-facts th, #trial-facts td { padding: 2px 8px; }
/* tables: wrap between words, never inside a header or a number */
#top-captions th, #top-captions td:last-child, #trial-facts th, #trial-facts td { white-space: nowrap; }
#top-captions td:first-child { overflow-wrap: normal; word-break: normal; }
"""
LAUNCH_KWARGS = dict(theme=gr.themes.Soft(), css=CSS, max_file_size=MAX_UPLOAD_BYTES)  # per file, 10 MB
QUEUE_MAX_SIZE = 16  # waiting requests beyond this are refused at once instead of piling up
DELETE_CACHE = (1800, 3600)  # every 30 min, delete uploads and outputs older than 1 h (docs/RELIABILITY.md)


def without_stray_temp_files(files: gr.File) -> gr.File:
    """``files`` (a ``gr.File``, ``type="filepath"``) without the empty temporary file Gradio leaves per upload.

    Gradio 6's ``File._process_single_file`` opens ``NamedTemporaryFile(delete=False, dir=GRADIO_CACHE)`` for
    every uploaded file each time an event takes the component as input, and never writes, uses or tracks it,
    so ``delete_cache`` never removes it: one stray empty ``tmp*`` file in the cache per upload and event.
    This replaces the method on this one component with the same file-type check, returning the uploaded
    file's own path as ``gr.File`` does. (Not a subclass: Gradio writes a ``.pyi`` stub next to the module of
    every Component subclass when the class is created.) ``tests/test_reliability.py`` counts the files.
    """
    from gradio.utils import NamedString
    from gradio_client import utils as client_utils

    if files.type != "filepath" or not hasattr(files, "_process_single_file"):
        return files

    def _process_single_file(f):
        if files.file_types and not client_utils.is_valid_file(f.path, files.file_types):
            raise refuse(f"Invalid file type. Please upload a file that is one of these formats: "
                         f"{files.file_types}", event="upload")
        return NamedString(f.path)

    files._process_single_file = _process_single_file
    return files


def refuse_bad_values(*components: gr.components.Component) -> None:
    """Make the input checks of Gradio's own components (a slider's range, a dropdown's choices) user errors.

    Gradio raises ``gr.Error`` for a value out of a component's bounds (an API call's ``strength=0``) and prints
    its traceback: a client's mistake would fill the server log. Wrapped here, per component instance as
    ``without_stray_temp_files`` does, the user reads the same message and the log gets one line.
    """
    import functools

    for component in components:
        preprocess = component.preprocess
        if getattr(preprocess, "refuses", False):
            continue

        @functools.wraps(preprocess)
        def checked(payload, _preprocess=preprocess, _name=component.label or type(component).__name__):
            try:
                return _preprocess(payload)
            except gr.Error as err:
                if not err.print_exception:
                    raise
                raise refuse(err.message, err.title, event=f"input {_name!r}") from err

        checked.refuses = True
        component.preprocess = checked


def write_returned_images_atomically() -> None:
    """Make Gradio write each returned image into its cache atomically, and only once per content.

    Gradio 6 saves a returned PIL image as ``<cache>/<sha256 of the PNG>/image.png`` with ``write_bytes``,
    rewriting the file in place each time the same image is returned again (the same example's seen image,
    butterfly and topomap on every page load; the same trial, seed and settings). A client fetching that
    file during a rewrite gets it truncated: the load test's burst of identical requests downloaded empty
    ``image.png`` files. Gradio already writes uploaded and copied files atomically
    (``save_file_to_cache``: a staging file, then ``os.replace``, and a touch when it exists); this does the
    same for ``processing_utils.save_pil_to_cache``, which ``gr.Image`` and ``gr.Gallery`` call. Process-wide
    (it replaces a function of Gradio's module) and idempotent.
    """
    import contextlib
    import os
    import tempfile

    from gradio import processing_utils

    if getattr(processing_utils.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:  # noqa: A002
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        if path.is_file():  # the same bytes (the folder is their hash): touch it, so delete_cache keeps it
            with contextlib.suppress(OSError):
                os.utime(path)
            return str(path)
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(staging, 0o644)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        return str(path)

    save_pil_to_cache.atomic = True
    processing_utils.save_pil_to_cache = save_pil_to_cache


SIMULATED_NOTE = (
    "**The default model was trained on simulated EEG** of people looking at drawings of 40 classes: it shows the "
    "method end to end and says nothing about how well real EEG decodes (model card at the bottom)."
)
CAPTION_SOURCES = [("the top decoded caption, as shown", "label"),
                   ("the decoded caption embedding, as regressed (the paper's L)", "predicted"),
                   ("the decoded detailed caption (the paper's B)", "detailed")]
FORMATS_NOTE = ("One file: " + ", ".join(TRIAL_EXTENSIONS) + ", any cap; a trial from stimulus onset, a recording "
                "with events (choose one below) or epochs (-epo.fif). With a BrainVision .vhdr upload its .eeg and "
                ".vmrk; with an EEGLAB .set, its .fdt when it has one.")


def log_user_errors() -> None:
    """Write the app's one-line records of user errors (logger ``demo``, INFO) to stderr, once per process."""
    import logging

    logger = logging.getLogger("demo")
    if not any(getattr(h, "neuroimagen", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.neuroimagen = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def model_card_accordion(card: str) -> None:
    """The checkpoint's model card, closed: metadata as a small table, the body as markdown, one section per fold."""
    parts = split_model_card(card)
    with gr.Accordion(f"Model card: {parts.title}" if parts.title else "Model card", open=False,
                      elem_id="model-card"):
        if parts.metadata:
            gr.Markdown(parts.metadata, elem_id="model-card-metadata")
        gr.Markdown(parts.intro, elem_id="model-card-intro")
        for heading, body in parts.sections:
            with gr.Accordion(heading, open=False):
                gr.Markdown(body)


def build_demo(pipe, examples_dir: str | Path | None = None, stimuli_dir: str | Path | None = None) -> gr.Blocks:
    """The NeuroImagen app around a loaded :class:`~neuroimagen.NeuroImagenPipeline` (any, e.g. a tiny one).

    One trial on screen: the selected tab is the source (the hidden ``source`` radio, still the API's input),
    selecting a tab or changing its widgets loads that tab's trial into "The EEG", and Reconstruct uses the
    same widgets, so the trial shown is the trial reconstructed; the results name it, and are emptied when
    another trial is shown and when a run starts.
    """
    write_returned_images_atomically()
    log_user_errors()
    h = Handlers(pipe, examples_dir, stimuli_dir)
    names = list(h.examples)
    card = model_card(pipe)

    with gr.Blocks(title="NeuroImagen", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# NeuroImagen: the image a person saw, reconstructed from their EEG\n"
                    "After Lan et al. 2023, *Seeing through the Brain*. Pick a trial, look at its EEG, "
                    "reconstruct, and compare every stage with the image that was seen.", elem_id="intro")
        gr.Markdown(SIMULATED_NOTE + " " + model_summary(pipe) + ".", elem_id="simulated-note")
        state = gr.State(None)  # the loaded trial, for the topomap
        result_key = gr.State(None)  # which trial the results on screen are of (Handlers.trial_key)
        source = gr.Radio(list(SOURCES), value="example" if names else "simulate", label="Reconstruct from",
                          elem_id="source", visible=False)  # set by the tabs

        with gr.Row(equal_height=False):
            # ---------------- 1. the trial ----------------
            with gr.Column(scale=4, min_width=320):
                gr.Markdown("### 1. Pick a trial")
                with gr.Tabs(selected="tab-example" if names else "tab-simulate"):
                    with gr.Tab("Examples", id="tab-example", elem_id="tab-example") as tab_example:
                        gallery = gr.Gallery(
                            [(str(e.stimulus), e.caption) for e in h.gallery], label="Seen images of the example "
                            "trials", show_label=False, columns=4, height="auto", allow_preview=False,
                            object_fit="contain", buttons=[], elem_id="example-gallery", elem_classes=["pixelated", "captions-below"],
                            interactive=False, visible=bool(h.gallery))
                        example = gr.Dropdown(names, value=names[0] if names else None,
                                              label="Example trial (or click a seen image)", elem_id="example-name")
                    with gr.Tab("Upload", id="tab-upload", elem_id="tab-upload") as tab_upload:
                        files = without_stray_temp_files(gr.File(
                            file_count="multiple", file_types=list(UPLOAD_EXTENSIONS), label="Your EEG trial",
                            height=140, elem_id="upload"))
                        gr.Markdown(FORMATS_NOTE, elem_classes="small-print")
                        # A recording's events (upload_window fills them in); an API call may name any event.
                        event = gr.Dropdown([], value=None, label="Event", allow_custom_value=True, visible=False,
                                            elem_id="event")
                        with gr.Row():
                            occurrence = gr.Slider(1, MAX_OCCURRENCES, value=1, step=1, precision=0,
                                                   label="Occurrence", visible=False, min_width=160,
                                                   elem_id="occurrence")
                            average = gr.Checkbox(False, label="Average all occurrences", visible=False,
                                                  elem_id="average")
                        window = gr.State(None)  # the upload's events, for the Occurrence slider
                        formats = upload_examples(h.examples_dir) if h.examples_dir.is_dir() else []
                        if formats:
                            gr.Examples([[paths] for _, paths in formats], inputs=[files],
                                        example_labels=[label for label, _ in formats],
                                        label="Example files, one per format (click to upload)",
                                        examples_per_page=len(formats), api_name="upload_format_example",
                                        elem_id="format-examples")
                    with gr.Tab("Simulate", id="tab-simulate", elem_id="tab-simulate") as tab_simulate:
                        sim_class = gr.Dropdown(list(CLASS_NAMES), value=CLASS_NAMES[8], label="Class",
                                                elem_id="sim-class")
                        sim_image = gr.Slider(1, IMAGES_PER_CLASS, value=1, step=1, precision=0,
                                              label="Picture", elem_id="sim-image",
                                              info=f"which of the class's {IMAGES_PER_CLASS} drawings was seen")
                        sim_subject = gr.Slider(1, N_SUBJECTS, value=1, step=1, precision=0, label="Person",
                                                info=f"which of the {N_SUBJECTS} simulated people saw it",
                                                elem_id="sim-subject")
                        sim_noise = gr.Radio(list(NOISE_PRESETS), value=NOISE_PRESETS[0], label="Noise",
                                             info="demo: clean enough to see the method; realistic: as noisy as "
                                                  "single trials of published visual evoked potentials")
                        gr.Markdown("The trial is simulated again whenever one of these changes.",
                                    elem_classes="small-print")

            # ---------------- 2. its EEG ----------------
            with gr.Column(scale=5, min_width=360):
                gr.Markdown("### 2. The EEG")
                facts = gr.Markdown(label="Trial facts", elem_id="trial-facts")
                butterfly = gr.Image(label="Butterfly plot (all channels)", show_label=False, type="pil", format="png",
                                     interactive=False, buttons=["fullscreen"], elem_id="butterfly")
                with gr.Row(equal_height=False):
                    with gr.Column(min_width=200):
                        topo = gr.Image(label="Topomap", show_label=False, type="pil", format="png", interactive=False,
                                        height=220, buttons=["fullscreen"], elem_id="topomap")
                        latency = gr.Slider(20, 459, value=DEFAULT_LATENCY_MS, step=1, label="Topomap time (ms)",
                                            info="after the picture appeared")
                    channels = gr.Markdown(label="Channel report", elem_id="channel-report", min_width=140)

            # ---------------- 3. reconstruct, 4. every stage ----------------
            with gr.Column(scale=5, min_width=360):
                gr.Markdown("### 3. Reconstruct")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-btn")
                ablation = gr.Checkbox(False, elem_id="ablation-box",
                                       label="Also show the paper's ablation (runs when ticked: 3 runs, about 3 s)")
                with gr.Accordion("Settings: strength, guidance, steps, seed, caption", open=False,
                                  elem_id="settings"):
                    strength = gr.Slider(0.05, 1.0, value=0.75, step=0.05, label="Diffusion strength",
                                         info="how much of the saliency map is noised away (1: none of it is kept)")
                    guidance = gr.Slider(1.0, 10.0, value=5.0, step=0.5, label="Guidance scale",
                                         info="how strongly the picture follows the decoded caption")
                    steps = gr.Slider(1, 50, value=25, step=1, precision=0, label="Denoising steps",
                                      info="the diffusion runs steps × strength of them, at least one")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed", elem_id="seed")
                        randomize = gr.Checkbox(False, label="Randomize seed")
                    caption_source = gr.Radio(CAPTION_SOURCES, value="label", label="The diffusion follows")
                    prior = getattr(pipe, "layout_prior", None)
                    layout_weight = gr.Slider(0.0, 2.0, value=pipe.default_layout_weight, step=0.25,
                                              label="Layout prior weight", visible=prior is not None,
                                              info="how strongly a typical drawing of the decoded class is painted "
                                                   "into the saliency map, where the EEG says the object was (0: off)")

                gr.Markdown("### 4. Every stage")
                title = gr.Markdown(NO_RESULTS, elem_id="result-title")
                with gr.Row(elem_id="stage-row"):
                    stage = dict(type="pil", format="png", interactive=False, elem_classes="pixelated", height=160,
                                 min_width=100, buttons=["download"])
                    stimulus = gr.Image(label="Seen image", elem_id="stimulus", **stage)
                    saliency = gr.Image(label="Saliency map", elem_id="saliency", **stage)
                    recon = gr.Image(label="Reconstruction", elem_id="reconstruction", **stage)
                with gr.Row(equal_height=True):
                    caption = gr.Textbox(label="Decoded caption", info="the caption the diffusion is conditioned on",
                                         interactive=False, scale=4, elem_id="caption")
                    seed_used = gr.Number(None, precision=0, label="Seed used", interactive=False, min_width=110,
                                          scale=1, elem_id="seed-used")
                ablation_gallery = gr.Gallery(label="Ablation: the same trial and seed, one condition left out",
                                              columns=3, height="auto", format="png", object_fit="contain",
                                              allow_preview=False, buttons=[], interactive=False, visible=False,
                                              elem_classes=["pixelated", "captions-below"], elem_id="ablation")
                probs = gr.Label(num_top_classes=5, label="Class probabilities", elem_id="class-probs")
                captions = gr.Markdown(label="Top captions", elem_id="top-captions")
                notes = gr.Markdown(label="Notes", elem_id="notes")

        if card:
            model_card_accordion(card)

        # ---------------- events ----------------
        views = [source, facts, butterfly, topo, channels, stimulus, state]
        trial_inputs = [source, example, files, sim_class, sim_image, sim_subject, sim_noise]
        window_inputs = [event, occurrence, average]  # which trial of an uploaded recording
        results = [recon, saliency, caption, probs, seed_used, captions, ablation_gallery, notes, title]
        # The API's parameters, in this order: new ones go at the end, so existing callers keep working.
        run_inputs = trial_inputs + [strength, guidance, steps, seed, randomize, caption_source, ablation,
                                     layout_weight] + window_inputs
        run_outputs = results[:6] + [stimulus, ablation_gallery, notes, title, result_key]
        upload_inputs = [files, latency] + window_inputs

        def after_loading(load) -> None:
            """A trial load that failed leaves the panel saying so; results of another trial are emptied."""
            load.failure(h.no_trial, None, views[1:], queue=False, api_visibility="private")
            load.then(h.clear_stale, trial_inputs + window_inputs + [result_key], results, queue=False,
                      api_visibility="private")

        for tab, name in ((tab_example, "example"), (tab_upload, "upload"), (tab_simulate, "simulate")):
            tab.select(None, None, source, js=f"() => {name!r}", queue=False)  # at once, whatever the load does
            # ... and the server knows it: loads of the other tabs that end later are not shown (SelectedTabs)
            tab.select(h.tab_selector(name), None, None, queue=False, api_visibility="private")
        demo.unload(h.forget_session)
        gallery.select(h.pick_example, None, example, api_name="pick_example", api_visibility="undocumented")
        after_loading(gr.on([tab_example.select, example.change], h.load_example, [example, latency], views,
                            api_name="show_example"))
        after_loading(gr.on([tab_upload.select, occurrence.release, average.input], h.load_upload, upload_inputs,
                            views, api_name="show_upload", trigger_mode="always_last"))
        # A new upload: its events first (none chosen), then its trial; a new event: its occurrences, then its trial.
        after_loading(files.change(h.upload_window, files, window_inputs + [window], api_visibility="private").then(
            h.load_upload, upload_inputs, views, api_visibility="private"))
        after_loading(event.input(h.pick_event, [event, window], occurrence, queue=False,
                                  api_visibility="private").then(h.load_upload, upload_inputs, views,
                                                                  api_visibility="private"))
        after_loading(gr.on([tab_simulate.select, sim_class.change, sim_image.change, sim_subject.change,
                             sim_noise.change], h.simulate, [sim_class, sim_image, sim_subject, sim_noise, latency],
                            views, api_name="simulate", trigger_mode="always_last"))
        latency.release(h.topomap, [latency, state], topo, api_name="topomap", trigger_mode="always_last")

        refuse_bad_values(*dict.fromkeys(run_inputs + [latency]))
        pipeline = dict(concurrency_limit=1, concurrency_id="pipeline")
        run.click(h.clear_results, None, results, queue=False, api_visibility="private").then(
            h.reconstruct, run_inputs, run_outputs, api_name="reconstruct", **pipeline
        ).failure(h.failed_results, None, title, queue=False, api_visibility="private")
        ablation.change(h.show_ablation, ablation, ablation_gallery, api_name="show_ablation",
                        api_visibility="undocumented", queue=False)
        ablation.input(h.clear_results_if, ablation, results, queue=False, api_visibility="private").then(
            h.reconstruct_if_ablation(), run_inputs, run_outputs, api_visibility="private", **pipeline
        ).failure(h.failed_results, None, title, queue=False, api_visibility="private")
        if names:
            after_loading(demo.load(h.load_example, [example, latency], views, api_name="show_default_example"))
    return demo
