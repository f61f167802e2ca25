"""Work-arounds for Gradio 6.31.0 (the version ``requirements.txt`` pins), each checked against it at import.

Three changes to Gradio's behaviour, each for a problem found in this app (docs/RELIABILITY.md):

1. :func:`without_stray_temp_files` (per ``gr.File`` instance): Gradio leaves one empty temporary file in its
   cache per upload and event, for ever.
2. :func:`refuse_bad_values` (per component instance): Gradio prints a traceback for a client's out-of-range
   value (an API call's ``strength=0``), filling the server log with a user's mistake.
3. :func:`write_returned_images_atomically` (process-wide: it replaces ``processing_utils.save_pil_to_cache``):
   Gradio rewrites a returned image in place while a client may be downloading it (a truncated PNG).

They rely on Gradio's internals (``File._process_single_file``, ``processing_utils.save_pil_to_cache``), so
importing this module with another Gradio warns: check each problem again with that version
(``tests/test_reliability.py`` tests all three) and update ``GRADIO_VERSION`` and the pin together.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from pathlib import Path

import gradio as gr
from gradio import processing_utils

from .errors import refuse

GRADIO_VERSION = "6.31.0"  # requirements.txt pins it; the patches below were written and tested against it

if gr.__version__ != GRADIO_VERSION:
    warnings.warn(f"demo.gradio_patches was written for Gradio {GRADIO_VERSION} but Gradio {gr.__version__} is "
                  f"installed: the app's work-arounds may no longer be needed or may no longer apply (see this "
                  f"module's docstring; tests/test_reliability.py checks them).", RuntimeWarning, stacklevel=2)


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
