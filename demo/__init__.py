"""The Gradio app: ``build_demo(pipe)`` (layout in ``ui``, behaviour in ``handlers``). The library never imports it."""

from .ui import LAUNCH_KWARGS, QUEUE_MAX_SIZE, build_demo

__all__ = ["build_demo", "LAUNCH_KWARGS", "QUEUE_MAX_SIZE"]
