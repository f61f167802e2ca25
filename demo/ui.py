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
    MAX_UPLOAD_BYTES,
    N_SUBJECTS,
    NOISE_PRESETS,
    TRIAL_EXTENSIONS,
    UPLOAD_EXTENSIONS,
    Handlers,
    model_card,
    model_summary,
    upload_examples,
)

CSS = """
.pixelated img { image-rendering: pixelated; }
#stimulus img, #saliency img, #reconstruction img { width: 100%; height: 100%; object-fit: contain; }
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
            raise gr.Error(f"Invalid file type. Please upload a file that is one of these formats: "
                           f"{files.file_types}")
        return NamedString(f.path)

    files._process_single_file = _process_single_file
    return files


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
    "**The default model was trained on simulated EEG.** `neuroimagen-tiny` learned from EEG simulated with an "
    "MNE forward model for OpenMoji drawings of the 40 EEG-ImageNet classes: it shows the method end to end on "
    "a CPU and says nothing about how well real EEG decodes. See its model card "
    "(`checkpoints/neuroimagen-tiny/README.md`, below)."
)
CAPTION_SOURCE_INFO = ("label: the exact states of the top decoded caption (the caption shown); predicted: the "
                       "decoded label-caption embedding as regressed (the paper's L); detailed: the decoded "
                       "detailed caption (the paper's B)")


def build_demo(pipe, examples_dir: str | Path | None = None, stimuli_dir: str | Path | None = None) -> gr.Blocks:
    """The NeuroImagen app around a loaded :class:`~neuroimagen.NeuroImagenPipeline` (any, e.g. a tiny one)."""
    write_returned_images_atomically()
    h = Handlers(pipe, examples_dir, stimuli_dir)
    names = list(h.examples)
    card = model_card(pipe)

    with gr.Blocks(title="NeuroImagen", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# NeuroImagen: the image a person saw, reconstructed from their EEG\n"
                    "After Lan et al. 2023, *Seeing through the Brain*. Pick a trial, look at the EEG, "
                    "reconstruct, and compare every stage with the image that was seen.")
        gr.Markdown(SIMULATED_NOTE, elem_id="simulated-note")
        gr.Markdown(model_summary(pipe), elem_id="model-summary")
        state = gr.State(None)

        with gr.Row():
            # ---------------- left: trial and settings ----------------
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("### 1. Pick a trial")
                with gr.Tabs():
                    with gr.Tab("Examples", id="tab-example") as tab_example:
                        gallery = gr.Gallery(
                            [(str(e.stimulus), e.caption) for e in h.gallery], label="Seen images of the example "
                            "trials (click one)", columns=4, height="auto", allow_preview=False, object_fit="contain",
                            elem_id="example-gallery", elem_classes="pixelated", interactive=False,
                            visible=bool(h.gallery))
                        example = gr.Dropdown(names, value=names[0] if names else None, label="Example trial",
                                              elem_id="example-name")
                    with gr.Tab("Upload", id="tab-upload") as tab_upload:
                        files = without_stray_temp_files(gr.File(
                            file_count="multiple", file_types=list(UPLOAD_EXTENSIONS), label=(
                                f"One EEG trial ({' '.join(TRIAL_EXTENSIONS)}); for BrainVision add the .eeg and "
                                f".vmrk, for EEGLAB the .fdt"), elem_id="upload"))
                        formats = upload_examples(h.examples_dir) if h.examples_dir.is_dir() else []
                        if formats:
                            gr.Examples([[group] for group in formats], inputs=[files],
                                        label="Example files, one per format", api_name="upload_format_example")
                    with gr.Tab("Simulate", id="tab-simulate") as tab_simulate:
                        sim_class = gr.Dropdown(list(CLASS_NAMES), value=CLASS_NAMES[8], label="Class")
                        sim_image = gr.Slider(1, IMAGES_PER_CLASS, value=1, step=1, precision=0,
                                              label="Stimulus number (as in {synset}_0001.png)")
                        sim_subject = gr.Slider(1, N_SUBJECTS, value=1, step=1, precision=0, label="Subject")
                        sim_noise = gr.Radio(list(NOISE_PRESETS), value=NOISE_PRESETS[0], label="Noise preset",
                                             info="demo: clean enough to see the method; realistic: single-trial "
                                                  "SNR of published visual evoked potentials")
                        simulate_btn = gr.Button("Simulate a trial", elem_id="simulate-btn")
                source = gr.Radio(["example", "upload", "simulate"], value="example" if names else "simulate",
                                  label="Reconstruct from", elem_id="source")

                gr.Markdown("### 3. Tune")
                strength = gr.Slider(0.05, 1.0, value=0.75, step=0.05, label="Diffusion strength",
                                     info="how much of the saliency map is noised away (1: none of it is kept)")
                guidance = gr.Slider(1.0, 10.0, value=5.0, step=0.5, label="Guidance scale",
                                     info="classifier-free guidance on the decoded caption")
                steps = gr.Slider(1, 50, value=25, step=1, precision=0, label="Denoising steps")
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed", elem_id="seed")
                    randomize = gr.Checkbox(False, label="Randomize seed")
                caption_source = gr.Radio(["label", "predicted", "detailed"], value="label",
                                          label="Caption source", info=CAPTION_SOURCE_INFO)
                prior = getattr(pipe, "layout_prior", None)
                layout_weight = gr.Slider(0.0, 2.0, value=pipe.default_layout_weight,
                                          step=0.25, label="Layout prior weight", visible=prior is not None,
                                          info="opacity of the decoded class's object template, drawn into the "
                                               "saliency map at the object box decoded from the EEG (0: the "
                                               "saliency generator's map alone)")
                ablation = gr.Checkbox(False, label="Show the paper's ablation: saliency only, caption only, both")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-btn")

            # ---------------- right: EEG and stages ----------------
            with gr.Column(scale=3):
                gr.Markdown("### 2. The EEG")
                facts = gr.Markdown(label="Trial facts", elem_id="trial-facts")
                butterfly = gr.Image(label="Butterfly plot (all channels)", show_label=False, type="pil", format="png",
                                     interactive=False, elem_id="butterfly")
                with gr.Row():
                    with gr.Column():
                        topo = gr.Image(label="Topomap", show_label=False, type="pil", format="png", interactive=False,
                                        height=280,
                                        elem_id="topomap")
                        latency = gr.Slider(20, 459, value=DEFAULT_LATENCY_MS, step=1,
                                            label="Topomap latency (ms after onset)")
                    channels = gr.Markdown(label="Channel report", elem_id="channel-report")

                gr.Markdown("### 4. Every stage")
                with gr.Row(elem_id="stage-row"):
                    stage = dict(type="pil", format="png", interactive=False, elem_classes="pixelated", height=220)
                    stimulus = gr.Image(label="Seen image", elem_id="stimulus", **stage)
                    saliency = gr.Image(label="Saliency map", elem_id="saliency", **stage)
                    recon = gr.Image(label="Reconstruction", elem_id="reconstruction", **stage)
                caption = gr.Textbox(label="Decoded caption", info="the caption the diffusion is conditioned on",
                                     interactive=False, elem_id="caption")
                with gr.Row():
                    probs = gr.Label(num_top_classes=5, label="Class probabilities", elem_id="class-probs")
                    captions = gr.Markdown(label="Top captions", elem_id="top-captions")
                ablation_gallery = gr.Gallery(label="Ablation", columns=3, height=240, format="png",
                                              object_fit="contain", elem_classes="pixelated", interactive=False,
                                              elem_id="ablation", visible=False)
                notes = gr.Markdown(label="Notes", elem_id="notes")

        if card:
            with gr.Accordion("Model card", open=False):
                gr.Markdown(card)

        # ---------------- events ----------------
        views = [source, facts, butterfly, topo, channels, stimulus, state]
        gallery.select(h.pick_example, None, example, api_name="pick_example", api_visibility="undocumented")
        example.change(h.load_example, [example, latency], views, api_name="show_example")
        files.change(h.load_upload, [files, latency], views, api_name="show_upload")
        simulate_btn.click(h.simulate, [sim_class, sim_image, sim_subject, sim_noise, latency], views,
                           api_name="simulate")
        ablation.change(h.show_ablation, ablation, ablation_gallery, api_name="show_ablation",
                        api_visibility="undocumented", queue=False)
        latency.release(h.topomap, [latency, state], topo, api_name="topomap", trigger_mode="always_last")
        for tab, name in ((tab_example, "example"), (tab_upload, "upload"), (tab_simulate, "simulate")):
            tab.select((lambda value: lambda: value)(name), None, source, api_name=f"use_{name}",
                       api_visibility="undocumented", queue=False)
        run.click(h.reconstruct,
                  [source, example, files, sim_class, sim_image, sim_subject, sim_noise, strength, guidance, steps,
                   seed, randomize, caption_source, ablation, layout_weight],
                  [recon, saliency, caption, probs, seed, captions, stimulus, ablation_gallery, notes],
                  api_name="reconstruct", concurrency_limit=1, concurrency_id="pipeline")
        if names:
            demo.load(h.load_example, [example, latency], views, api_name="show_default_example")
    return demo
