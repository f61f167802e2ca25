"""User errors: the library's own message in a ``gr.Error``, one line in the server log, no traceback.

Every handler turns the library's ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` into
``gr.Error(message)`` so the user reads the library's own explanation and the app keeps serving.
A user's mistake writes one line to the server log (logger ``demo``); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import logging

import gradio as gr

USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
logger = logging.getLogger("demo")


def refuse(message: str, title: str = "Invalid input", event: str = "request") -> gr.Error:
    """A ``gr.Error`` for a user's mistake: the user reads ``message``; the server log gets one line, no traceback.

    Gradio prints the traceback of every exception an event raises unless it is a ``gr.Error`` with
    ``print_exception=False`` (``queueing.py``); a bad upload is not a bug of the app.
    """
    logger.info("%s refused (%s): %s", event, title, " ".join(str(message).split()))
    return gr.Error(message, title=title, print_exception=False)


def user_errors(fn):
    """Show the library's own message for bad input (``gr.Error``) instead of a generic failure."""

    @functools.wraps(fn)  # keeps the signature: Gradio reads parameter names and gr.Progress from it
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            if err.print_exception:  # raised by our own code or Gradio's: still the user's mistake
                raise refuse(err.message, err.title, fn.__name__) from err
            raise
        except USER_ERRORS as err:
            title = "File not found" if isinstance(err, FileNotFoundError) else "Invalid input"
            raise refuse(str(err), title, fn.__name__) from err

    return wrapper


def log_user_errors() -> None:
    """Write the app's one-line records of user errors (logger ``demo``, INFO) to stderr, once per process."""
    if not any(getattr(h, "neuroimagen", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.neuroimagen = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
