"""What triggers what: the page's events, wired to the handlers (``handlers``) over the widgets ``ui`` laid out.

The API names and the parameter order of the events are the app's public API (``tests/test_app_api.py``).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .gradio_patches import refuse_bad_values
from .handlers import Handlers


def wire_events(demo: gr.Blocks, w: SimpleNamespace, h: Handlers) -> None:
    """Every event of the page; the API names and parameter order are the app's public API."""
    views = [w.source, w.facts, w.butterfly, w.topo, w.channels, w.stimulus, w.state]
    trial_inputs = [w.source, w.example, w.files, w.sim_class, w.sim_image, w.sim_subject, w.sim_noise]
    window_inputs = [w.event, w.occurrence, w.average]  # which trial of an uploaded recording
    results = [w.recon, w.saliency, w.start, w.caption, w.probs, w.seed_used, w.captions, w.ablation_gallery, w.notes,
               w.title]  # what a run shows, emptied together (views.EMPTY_RESULTS)
    # The API's parameters and outputs, in this order: new ones go at the end, so existing callers keep working.
    run_inputs = trial_inputs + [w.strength, w.guidance, w.steps, w.seed, w.randomize, w.caption_source, w.ablation,
                                 w.layout_weight] + window_inputs
    run_outputs = [w.recon, w.saliency, w.caption, w.probs, w.seed_used, w.captions, w.stimulus, w.ablation_gallery,
                   w.notes, w.title, w.result_key, w.start]
    upload_inputs = [w.files, w.latency] + window_inputs

    def after_loading(load) -> None:
        """A trial load that failed leaves the panel saying so; results of another trial are emptied."""
        load.failure(h.no_trial, None, views[1:], queue=False, api_visibility="private")
        load.then(h.clear_stale, trial_inputs + window_inputs + [w.result_key], results, queue=False,
                  api_visibility="private")

    for tab, name in ((w.tab_example, "example"), (w.tab_upload, "upload"), (w.tab_simulate, "simulate")):
        tab.select(None, None, w.source, js=f"() => {name!r}", queue=False)  # at once, whatever the load does
        # ... and the server knows it: loads of the other tabs that end later are not shown (SelectedTabs)
        tab.select(h.tab_selector(name), None, None, queue=False, api_visibility="private")
    demo.unload(h.forget_session)
    w.gallery.select(h.pick_example, None, w.example, api_name="pick_example", api_visibility="undocumented")
    after_loading(gr.on([w.tab_example.select, w.example.change], h.load_example, [w.example, w.latency], views,
                        api_name="show_example"))
    after_loading(gr.on([w.tab_upload.select, w.occurrence.release, w.average.input], h.load_upload, upload_inputs,
                        views, api_name="show_upload", trigger_mode="always_last"))
    # A new upload: its events first (none chosen), then its trial; a new event: its occurrences, then its trial.
    after_loading(w.files.change(h.upload_window, w.files, window_inputs + [w.window], api_visibility="private").then(
        h.load_upload, upload_inputs, views, api_visibility="private"))
    after_loading(w.event.input(h.pick_event, [w.event, w.window], w.occurrence, queue=False,
                                api_visibility="private").then(h.load_upload, upload_inputs, views,
                                                                api_visibility="private"))
    after_loading(gr.on([w.tab_simulate.select, w.sim_class.change, w.sim_image.change, w.sim_subject.change,
                         w.sim_noise.change], h.simulate, [w.sim_class, w.sim_image, w.sim_subject, w.sim_noise,
                                                           w.latency], views, api_name="simulate",
                        trigger_mode="always_last"))
    w.latency.release(h.topomap, [w.latency, w.state], w.topo, api_name="topomap", trigger_mode="always_last")

    refuse_bad_values(*dict.fromkeys(run_inputs + [w.latency]))
    pipeline = dict(concurrency_limit=1, concurrency_id="pipeline")
    w.run.click(h.clear_results, None, results, queue=False, api_visibility="private").then(
        h.reconstruct, run_inputs, run_outputs, api_name="reconstruct", **pipeline
    ).failure(h.failed_results, None, w.title, queue=False, api_visibility="private")
    # The picture's label follows the results' title (a guess under the out-of-distribution banner)
    w.title.change(h.picture_label, w.title, w.recon, queue=False, api_visibility="private")
    w.ablation.change(h.show_ablation, w.ablation, w.ablation_gallery, api_name="show_ablation",
                      api_visibility="undocumented", queue=False)
    w.ablation.input(h.clear_results_if, w.ablation, results, queue=False, api_visibility="private").then(
        h.reconstruct_if_ablation(), run_inputs, run_outputs, api_visibility="private", **pipeline
    ).failure(h.failed_results, None, w.title, queue=False, api_visibility="private")
    if w.names:
        after_loading(demo.load(h.load_example, [w.example, w.latency], views, api_name="show_default_example"))
