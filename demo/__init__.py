"""The Gradio app: ``build_demo(pipe)``. The library never imports it.

One file per job: ``settings`` (defaults and limits, no Gradio), ``startup`` (how ``app.py`` starts: flags and
environment variables, device and dtypes, ZeroGPU; no Gradio), ``examples`` (the shipped files), ``trials``
(the trial from its three sources), ``views`` (what the page shows), ``model_card``, ``errors`` (user errors),
``handlers`` (what each event does), ``events`` (what triggers what), ``gradio_patches`` (work-arounds for the
pinned Gradio) and ``ui`` (layout).
``demo.settings`` and the modules without Gradio import without it: only ``build_demo`` and ``LAUNCH_KWARGS``
load ``demo.ui``.
"""

__all__ = ["build_demo", "LAUNCH_KWARGS", "QUEUE_MAX_SIZE"]


def __getattr__(name: str):
    if name in __all__:
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'demo' has no attribute {name!r}")
