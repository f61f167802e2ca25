"""The app's layout: ``build_demo(pipe)`` returns the ``gr.Blocks``; behaviour lives in ``handlers``.

Gradio 6 takes the theme and CSS in ``launch()``: pass ``**LAUNCH_KWARGS``. The page has four columns' worth of
steps, each built by its own function into one namespace of widgets (``w``), then wired by
``events.wire_events``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from neuroimagen.data.classes import CLASS_NAMES

from .errors import log_user_errors
from .events import wire_events
from .examples import upload_examples
from .gradio_patches import without_stray_temp_files, write_returned_images_atomically
from .handlers import Handlers
from .model_card import model_card, model_summary, split_model_card
from .settings import (
    CAPTION_SOURCE,
    DEFAULT_CLASS,
    DEFAULT_LATENCY_MS,
    DELETE_CACHE,
    GUIDANCE_SCALE,
    IMAGES_PER_CLASS,
    LATENCY_RANGE_MS,
    MAX_OCCURRENCES,
    MAX_SEED,
    MAX_STEPS,
    MAX_UPLOAD_BYTES,
    N_SUBJECTS,
    NOISE_PRESETS,
    NUM_INFERENCE_STEPS,
    QUEUE_MAX_SIZE,
    SOURCES,
    STRENGTH,
    TRIAL_EXTENSIONS,
    UPLOAD_EXTENSIONS,
)
from .views import NO_RESULTS, SALIENCY_LABEL, STAGES_NOTE, START_LABEL

__all__ = ["build_demo", "LAUNCH_KWARGS", "QUEUE_MAX_SIZE"]

CSS = """
.pixelated img { image-rendering: pixelated; }
#stimulus img, #saliency img, #start-image img, #reconstruction img { width: 100%; height: 100%; object-fit: contain; }
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
  font-size: var(--text-xs); white-space: normal; line-height: 1.2; }
#stage-row [data-testid="block-label"] > span:first-child { display: none; }
#trial-facts table { font-size: var(--text-sm); margin: 0; }
#trial-facts th, #trial-facts td { padding: 2px 8px; }
/* tables: wrap between words, never inside a header or a number */
#top-captions th, #top-captions td:last-child, #trial-facts th, #trial-facts td { white-space: nowrap; }
#top-captions td:first-child { overflow-wrap: normal; word-break: normal; }
"""
LAUNCH_KWARGS = dict(theme=gr.themes.Soft(), css=CSS, max_file_size=MAX_UPLOAD_BYTES)  # per file, 10 MB

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
INTRO = ("# NeuroImagen: the image a person saw, reconstructed from their EEG\n"
         "After Lan et al. 2023, *Seeing through the Brain*. Pick a trial, look at its EEG, reconstruct, and compare "
         "every stage with the image that was seen.")


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
    card = model_card(pipe)
    w = SimpleNamespace(names=list(h.trials.examples))

    with gr.Blocks(title="NeuroImagen", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        gr.Markdown(SIMULATED_NOTE + " " + model_summary(pipe) + ".", elem_id="simulated-note")
        w.state = gr.State(None)  # the loaded trial, for the topomap
        w.result_key = gr.State(None)  # which trial the results on screen are of (trials.trial_key)
        w.source = gr.Radio(list(SOURCES), value="example" if w.names else "simulate", label="Reconstruct from",
                            elem_id="source", visible=False)  # set by the tabs
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                trial_column(w, h)
            with gr.Column(scale=5, min_width=360):
                eeg_column(w)
            with gr.Column(scale=5, min_width=360):
                results_column(w, pipe)
        if card:
            model_card_accordion(card)
        wire_events(demo, w, h)
    return demo


def trial_column(w: SimpleNamespace, h: Handlers) -> None:
    """1. Pick a trial: the Examples, Upload and Simulate tabs."""
    gr.Markdown("### 1. Pick a trial")
    gallery = h.trials.gallery
    with gr.Tabs(selected="tab-example" if w.names else "tab-simulate"):
        with gr.Tab("Examples", id="tab-example", elem_id="tab-example") as w.tab_example:
            w.gallery = gr.Gallery(
                [(str(e.stimulus), e.caption) for e in gallery], label="Seen images of the example trials",
                show_label=False, columns=4, height="auto", allow_preview=False, object_fit="contain", buttons=[],
                elem_id="example-gallery", elem_classes=["pixelated", "captions-below"], interactive=False,
                visible=bool(gallery))
            w.example = gr.Dropdown(w.names, value=w.names[0] if w.names else None,
                                    label="Example trial (or click a seen image)", elem_id="example-name")
        with gr.Tab("Upload", id="tab-upload", elem_id="tab-upload") as w.tab_upload:
            upload_tab(w, h)
        with gr.Tab("Simulate", id="tab-simulate", elem_id="tab-simulate") as w.tab_simulate:
            w.sim_class = gr.Dropdown(list(CLASS_NAMES), value=CLASS_NAMES[DEFAULT_CLASS], label="Class",
                                      elem_id="sim-class")
            w.sim_image = gr.Slider(1, IMAGES_PER_CLASS, value=1, step=1, precision=0, label="Picture",
                                    elem_id="sim-image",
                                    info=f"which of the class's {IMAGES_PER_CLASS} drawings was seen")
            w.sim_subject = gr.Slider(1, N_SUBJECTS, value=1, step=1, precision=0, label="Person",
                                      info=f"which of the {N_SUBJECTS} simulated people saw it", elem_id="sim-subject")
            w.sim_noise = gr.Radio(list(NOISE_PRESETS), value=NOISE_PRESETS[0], label="Noise",
                                   info="demo: clean enough to see the method; realistic: as noisy as single trials "
                                        "of published visual evoked potentials")
            gr.Markdown("The trial is simulated again whenever one of these changes.", elem_classes="small-print")


def upload_tab(w: SimpleNamespace, h: Handlers) -> None:
    """The upload box, a recording's event widgets, and one example file per format."""
    w.files = without_stray_temp_files(gr.File(file_count="multiple", file_types=list(UPLOAD_EXTENSIONS),
                                               label="Your EEG trial", height=140, elem_id="upload"))
    gr.Markdown(FORMATS_NOTE, elem_classes="small-print")
    # A recording's events (upload_window fills them in); an API call may name any event.
    w.event = gr.Dropdown([], value=None, label="Event", allow_custom_value=True, visible=False, elem_id="event")
    with gr.Row():
        w.occurrence = gr.Slider(1, MAX_OCCURRENCES, value=1, step=1, precision=0, label="Occurrence",
                                 visible=False, min_width=160, elem_id="occurrence")
        w.average = gr.Checkbox(False, label="Average all occurrences", visible=False, elem_id="average")
    w.window = gr.State(None)  # the upload's events, for the Occurrence slider
    formats = upload_examples(h.trials.examples_dir) if h.trials.examples_dir.is_dir() else []
    if formats:
        gr.Examples([[paths] for _, paths in formats], inputs=[w.files], example_labels=[label for label, _ in formats],
                    label="Example files, one per format (click to upload)", examples_per_page=len(formats),
                    api_name="upload_format_example", elem_id="format-examples")


def eeg_column(w: SimpleNamespace) -> None:
    """2. The EEG: the trial's facts, butterfly plots, topomap and channel report."""
    gr.Markdown("### 2. The EEG")
    w.facts = gr.Markdown(label="Trial facts", elem_id="trial-facts")
    w.butterfly = gr.Image(label="Butterfly plot (all channels)", show_label=False, type="pil", format="png",
                           interactive=False, buttons=["fullscreen"], elem_id="butterfly")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=200):
            w.topo = gr.Image(label="Topomap", show_label=False, type="pil", format="png", interactive=False,
                              height=220, buttons=["fullscreen"], elem_id="topomap")
            w.latency = gr.Slider(*LATENCY_RANGE_MS, value=DEFAULT_LATENCY_MS, step=1, label="Topomap time (ms)",
                                  info="after the picture appeared")
        w.channels = gr.Markdown(label="Channel report", elem_id="channel-report", min_width=140)


def settings_accordion(w: SimpleNamespace, pipe) -> None:
    """Strength, guidance, steps, seed, caption source and the layout prior's weight, closed."""
    with gr.Accordion("Settings: strength, guidance, steps, seed, caption", open=False, elem_id="settings"):
        w.strength = gr.Slider(0.05, 1.0, value=STRENGTH, step=0.05, label="Diffusion strength",
                               info="how much of the saliency map is noised away (1: none of it is kept)")
        w.guidance = gr.Slider(1.0, 10.0, value=GUIDANCE_SCALE, step=0.5, label="Guidance scale",
                               info="how strongly the picture follows the decoded caption")
        w.steps = gr.Slider(1, MAX_STEPS, value=NUM_INFERENCE_STEPS, step=1, precision=0, label="Denoising steps",
                            info="the diffusion runs steps × strength of them, at least one")
        with gr.Row():
            w.seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
            w.randomize = gr.Checkbox(False, label="Randomize seed")
        w.caption_source = gr.Radio(CAPTION_SOURCES, value=CAPTION_SOURCE, label="The diffusion follows")
        prior = getattr(pipe, "layout_prior", None)
        w.layout_weight = gr.Slider(0.0, 2.0, value=pipe.default_layout_weight, step=0.25, label="Layout prior weight",
                                    visible=prior is not None,
                                    info="how strongly a typical drawing of the decoded class is painted into the "
                                         "start image, where the EEG says the object was (0: off)")


def results_column(w: SimpleNamespace, pipe) -> None:
    """3. Reconstruct (button, ablation, settings) and 4. every stage of the result."""
    gr.Markdown("### 3. Reconstruct")
    w.run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-btn")
    w.ablation = gr.Checkbox(False, elem_id="ablation-box",
                             label="Also show the paper's ablation (runs when ticked: 3 runs, about 3 s)")
    settings_accordion(w, pipe)

    gr.Markdown("### 4. Every stage")
    w.title = gr.Markdown(NO_RESULTS, elem_id="result-title")
    with gr.Row(elem_id="stage-row"):
        stage = dict(type="pil", format="png", interactive=False, elem_classes="pixelated", height=160,
                     min_width=80, buttons=["download"])
        w.stimulus = gr.Image(label="Seen image", elem_id="stimulus", **stage)
        w.saliency = gr.Image(label=SALIENCY_LABEL, elem_id="saliency", **stage)  # the generator's own map
        w.start = gr.Image(label=START_LABEL, elem_id="start-image", **stage)  # + the template: img2img's init
        w.recon = gr.Image(label="Reconstruction", elem_id="reconstruction", **stage)
    gr.Markdown(STAGES_NOTE, elem_classes="small-print", elem_id="stages-note")
    with gr.Row(equal_height=True):
        w.caption = gr.Textbox(label="Decoded caption", info="the caption the diffusion is conditioned on",
                               interactive=False, scale=4, elem_id="caption")
        w.seed_used = gr.Number(None, precision=0, label="Seed used", interactive=False, min_width=110, scale=1,
                                elem_id="seed-used")
    w.ablation_gallery = gr.Gallery(label="Ablation: the same trial and seed, one condition left out", columns=3,
                                    height="auto", format="png", object_fit="contain", allow_preview=False,
                                    buttons=[], interactive=False, visible=False,
                                    elem_classes=["pixelated", "captions-below"], elem_id="ablation")
    w.probs = gr.Label(num_top_classes=5, label="Class probabilities", elem_id="class-probs")
    w.captions = gr.Markdown(label="Top captions", elem_id="top-captions")
    w.notes = gr.Markdown(label="Notes", elem_id="notes")


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
