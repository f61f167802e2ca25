"""The library's logger and the ``verbose`` argument (after MNE's ``utils/_logging.py``).

Library functions report progress through ``logger`` (``logging.getLogger("neuroimagen")``) instead of
printing; a function decorated with :func:`verbose` takes ``verbose=None | bool | str`` for that call only.
Lines go to ``sys.stderr`` at INFO and above unless the caller says otherwise (MNE's default).
"""

from __future__ import annotations

import functools
import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged (a notebook's, a test's capture), not at import."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


logger = logging.getLogger("neuroimagen")
if not logger.handlers:  # as MNE: progress lines are shown unless verbose=False says otherwise
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def verbose(func):
    """Decorate a function that logs to ``neuroimagen``: it gains a keyword argument ``verbose`` (MNE's
    convention): ``None`` leaves the logger's level as it is (INFO: progress lines shown), ``True`` is
    ``"INFO"``, ``False`` is ``"WARNING"``, or a level name such as ``"DEBUG"``, for that call only."""

    @functools.wraps(func)
    def run(*args, verbose: bool | str | None = None, **kwargs):
        before = logger.level
        if verbose is not None:
            logger.setLevel({True: "INFO", False: "WARNING"}[verbose] if isinstance(verbose, bool) else verbose.upper())
        try:
            return func(*args, **kwargs)
        finally:
            logger.setLevel(before)

    return run
