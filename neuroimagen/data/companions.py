"""Files a recording's header names, and reading that opens only the files the caller handed over.

Three formats can make a reader open a file other than the one it was given:

- BrainVision: the ``.vhdr`` names its data (``DataFile=``) and markers (``MarkerFile=``);
- EEGLAB: a ``.set`` names its ``.fdt`` in ``EEG.data``;
- FIF: a split recording names its next part (``FIFF_REF_FILE_NAME`` / ``FIFF_REF_FILE_NUM``).

MNE resolves those names against the header's folder with ``os.path.join``, so an absolute or ``..``
name leaves it, and it parses BrainVision keys case-insensitively. Two layers close that for good:

1. :func:`references` reads a header *with MNE's own parser* (so it sees what MNE will see) and
   :func:`stage` requires every reference to be a bare file name that is one of the given companions.
   The reader then gets a private temporary folder holding only copies: the BrainVision header
   rewritten from the parsed values (nothing MNE could read differently survives), the companions
   under the names the header gives, and nothing else. A split FIF is refused.
2. While MNE reads, :func:`only_these_files` refuses (in that thread) every ``open`` of a path other
   than the staged copies and Python's own installation (lazy imports), through a ``sys.audit`` hook.
   Whatever a header says, no other file can be opened: a new way to name a file fails closed.

Every refusal is a :class:`~neuroimagen.data.TrialFileError` that names the reference and says why;
it never says whether a path outside the given files exists.
"""

from __future__ import annotations

import configparser
import contextlib
import contextvars
import functools
import os
import shutil
import site
import stat
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import TrialFileError

# header keys (lower case, as configparser stores them) that name another file
BRAINVISION_KEYS = {"datafile": "DataFile", "markerfile": "MarkerFile"}
COMPANION_EXTENSIONS = {".vhdr": (".eeg", ".vmrk"), ".set": (".fdt",)}


# ---------------------------------------------------------------------------------------------- references
def _brainvision_config(path: Path):
    """(first line, parsed parameters, comment text) exactly as MNE's BrainVision reader parses them."""
    from mne.io.brainvision.brainvision import _aux_hdr_info

    settings, cfg, _, _, _ = _aux_hdr_info(str(path), sfreq_override=1.0)  # sfreq: not needed here
    with open(path, "rb") as f:
        first = f.readline().decode("ascii", "ignore").strip()
    return first, cfg, settings


def _brainvision_references(path: Path) -> list[tuple[str, str, str]]:
    """(section, key as written by MNE's parser, value) of every file reference, in every section."""
    try:
        _, cfg, _ = _brainvision_config(path)
    except (configparser.Error, ValueError, UnicodeError, LookupError, RuntimeError, OSError) as err:
        raise TrialFileError(f"Could not read {path.name!r} as BrainVision: its header does not parse "
                             f"({' '.join(str(err).split())[:200]}). The file may be truncated or corrupt.") from None
    refs = []
    for section in cfg.sections():
        for key, value in cfg.items(section, raw=True):
            if key.lower() in BRAINVISION_KEYS:
                refs.append((section, BRAINVISION_KEYS[key.lower()], value))
    if not any(sec in ("Common Infos", "Common infos") and key == "DataFile" for sec, key, _ in refs):
        raise TrialFileError(f"Could not read {path.name!r} as BrainVision: the header has no DataFile= line in "
                             f"[Common Infos]. The file may be truncated or corrupt.")
    return refs


def _eeglab_references(path: Path) -> list[tuple[str, str, str]]:
    """The data file an EEGLAB ``.set`` names in ``EEG.data`` (none when the data are inside the ``.set``)."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 7.3"):
        raise TrialFileError(f"{path.name!r} is a MATLAB 7.3 (HDF5) file: expected an EEGLAB .set saved in MATLAB "
                             f"v7 format (EEGLAB: File > Preferences, uncheck 'Matlab 7.3'; or pop_saveset with "
                             f"'version', '7').")
    from mne.io.eeglab.eeglab import _check_load_mat

    eeg = _check_load_mat(str(path), None, preload=False)
    data = eeg.get("data")
    if not isinstance(data, str) or os.path.realpath(data) == os.path.realpath(path):
        return []  # numeric, or MNE's marker for data inside the .set itself
    return [("EEG", "data", data)]


def _fif_references(path: Path) -> list[tuple[str, str, str]]:
    """The next part a split FIF recording names (its FIFF_REF block), as MNE would follow it."""
    from mne._fiff.constants import FIFF
    from mne._fiff.open import fiff_open
    from mne._fiff.tag import read_tag
    from mne._fiff.tree import dir_tree_find

    refs = []
    f, tree, _ = fiff_open(Path(path), preload=False, verbose="error")
    with f as fid:
        for node in dir_tree_find(tree, FIFF.FIFFB_REF):
            for ent in node["directory"]:
                if ent.kind == FIFF.FIFF_REF_FILE_NAME:
                    refs.append(("FIFF_REF", "file name", str(read_tag(fid, ent.pos).data)))
                elif ent.kind == FIFF.FIFF_REF_FILE_NUM:
                    refs.append(("FIFF_REF", "file number", str(read_tag(fid, ent.pos).data.item())))
    return refs


def references(path: str | Path) -> list[tuple[str, str, str]]:
    """Every reference to another file in a recording's header, as MNE's readers would see it.

    Parameters
    ----------
    path : str | Path
        A ``.vhdr``, ``.set`` or ``.fif`` file (other formats name no files: ``[]``).

    Returns
    -------
    refs : list of (section, key, value)
        E.g. ``[("Common Infos", "DataFile", "rec.eeg"), ("Common Infos", "MarkerFile", "rec.vmrk")]``; keys
        in any case and any section are reported, as written (MNE ignores case).
    """
    path = Path(path)
    read = {".vhdr": _brainvision_references, ".set": _eeglab_references, ".fif": _fif_references}.get(
        path.suffix.lower())
    if read is None:
        return []
    with only_these_files([path]):  # parsing a header opens the header only
        return read(path)


def companion_names(path: str | Path) -> list[str]:
    """The files a recording needs beside it: e.g. ``['rec.eeg', 'rec.vmrk']`` for ``rec.vhdr``.

    Raises :class:`~neuroimagen.data.TrialFileError` when a reference is not a bare file name (a path,
    ``..``) or the header cannot be parsed; ``[]`` for formats that name no other file.
    """
    path = Path(path)
    names = []
    for section, key, value in references(path):
        _check_bare(path, section, key, value)
        if value not in names:
            names.append(value)
    return names


def _check_bare(path: Path, section: str, key: str, value: str) -> None:
    where = f"{key}={value!r}" + (f" in [{section}]" if section not in ("EEG", "FIFF_REF") else "")
    if section == "FIFF_REF":
        raise TrialFileError(f"{path.name!r} is one part of a split FIF recording (it names another part, "
                             f"{Path(value).name!r}): expected one trial in one file. Crop the recording and save it again "
                             f"(Raw.save with split_size large enough).")
    bare = value.strip()
    if not bare or bare != value or "/" in bare or "\\" in bare or bare in (".", "..") or ":" in bare \
            or "\0" in bare or Path(bare).name != bare:
        raise TrialFileError(f"{path.name!r} names {where}: expected the bare name of a file given with it (like "
                             f"'{path.stem}{COMPANION_EXTENSIONS.get(path.suffix.lower(), ('.dat',))[0]}'), not a "
                             f"path. Refused, so that nothing but the given files is read; rename the reference in "
                             f"the header.")


# ---------------------------------------------------------------------------------------------- staging
def _copy_regular(src: Path, dst: Path, follow: bool) -> None:
    """Copy ``src`` (a regular file; a symbolic link only when ``follow``) to ``dst`` without following links."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(src, flags)
    except OSError as err:
        if not follow and os.path.islink(src):
            raise TrialFileError(f"{src.name!r} is a symbolic link: expected the file itself. Refused, so that "
                                 f"nothing but the given files is read.") from None
        raise TrialFileError(f"Could not open {src.name!r}: {err.strerror or err}.") from None
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise TrialFileError(f"{src.name!r} is not a regular file: expected an EEG file.")
        with open(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _write_brainvision_header(src: Path, dst: Path) -> None:
    """Write the header again from what MNE's parser read (only that survives), every file reference set to
    the bare name :func:`companion_names` checked: the staged companion of that name."""
    first, cfg, comment = _brainvision_config(src)
    for section in cfg.sections():
        for key in list(cfg.options(section)):
            if key.lower() in BRAINVISION_KEYS:
                cfg.set(section, key, Path(cfg.get(section, key, raw=True)).name)
    with open(dst, "x", encoding="utf-8", newline="\r\n") as f:
        f.write(first + "\n")
        cfg.write(f, space_around_delimiters=False)
        if comment:
            f.write("[Comment]" + comment)


@contextlib.contextmanager
def stage(path: str | Path, companions: Sequence[str | Path] | None = None,
          max_bytes: int | None = None) -> Iterator[Path]:
    """A private folder holding only ``path`` and the files its header names; yields the staged ``path``.

    Parameters
    ----------
    path : str | Path
        The recording (``.vhdr``, ``.set``, ``.fif``; other formats are staged alone).
    companions : list of (str | Path) | None
        The files given with it (uploads). Every file the header names must be one of them, by name;
        symbolic links are refused. ``None``: the named files are taken from ``path``'s folder.
    max_bytes : int | None
        Most bytes all the files may have together; checked before anything is copied.

    Raises
    ------
    TrialFileError
        A reference that is a path, a file the header names that was not given, a given file the header does
        not name, a symbolic link among the given files, a split FIF.
    """
    path = Path(path)
    given = None if companions is None else {Path(c).name: Path(c) for c in companions}
    needed = companion_names(path)
    if given is not None:
        extra = sorted(set(given) - set(needed) - {path.name})
        if extra:
            named = ", ".join(map(repr, needed)) or "no other file"
            raise TrialFileError(f"Got {', '.join(map(repr, extra))} with {path.name!r}, which names {named}: "
                                 f"give only the files of one recording.")
    needed = [n for n in needed if n != path.name]  # a header naming itself (EEGLAB data inside the .set)
    sources = {n: (given.get(n) if given is not None else path.parent / n) for n in needed}
    missing = [n for n, p in sources.items() if p is None or not (p.is_file() or p.is_symlink())]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        where = "not among the files given" if given is not None else "not beside it"
        raise TrialFileError(f"{path.name!r} names {' and '.join(map(repr, missing))}, which {verb} {where}: "
                             f"{_recording_hint(path)}")
    if max_bytes is not None:
        size = sum(os.stat(p, follow_symlinks=given is None).st_size for p in [path, *sources.values()])
        if size > max_bytes:
            raise TrialFileError(f"{path.name!r} and the files it names are {size / 2**20:.1f} MB together: the "
                                 f"limit is {max_bytes / 2**20:.0f} MB for one trial. Crop the recording to the "
                                 f"trial first.")
    with tempfile.TemporaryDirectory(prefix="neuroimagen-read-") as tmp:
        folder = Path(tmp)
        staged = folder / path.name
        for name, src in sources.items():
            _copy_regular(src, folder / name, follow=given is None)
        if path.suffix.lower() == ".vhdr":
            _write_brainvision_header(path, staged)
        else:
            _copy_regular(path, staged, follow=True)  # the file the caller named
        yield staged


def _recording_hint(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".vhdr":
        return "a BrainVision recording is three files (.vhdr, .vmrk, .eeg); give all three."
    if ext == ".set":
        return "an EEGLAB recording with a separate data file is two files (.set, .fdt); give both."
    return "give every file of the recording."


# ---------------------------------------------------------------------------------------------- the guard
class OutsideFileRefused(PermissionError):
    """Raised inside a reader that tried to open a file it was not handed (see :func:`only_these_files`)."""


_ALLOWED: contextvars.ContextVar[tuple[frozenset[str], list[str]] | None] = contextvars.ContextVar(
    "neuroimagen_allowed_files", default=None)
_HOOK_LOCK = threading.Lock()
_HOOKED = False


@functools.lru_cache(maxsize=1)
def _install_root() -> tuple[str, ...]:
    """Folders of Python and its packages: lazy imports and packages' own data are read from there."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values(),
             str(Path(__file__).resolve().parents[1])}  # the neuroimagen package (an editable install)
    with contextlib.suppress(AttributeError):
        roots.update(site.getsitepackages())
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def _audit(event: str, args: tuple) -> None:
    if event != "open":
        return
    guard = _ALLOWED.get()
    if guard is None or isinstance(args[0], int):  # not reading, or an already open descriptor
        return
    allowed, refused = guard
    real = os.path.realpath(os.fsdecode(args[0]))
    if real in allowed:
        return
    mode, flags = args[1], args[2] if len(args) > 2 else 0
    writes = (mode is not None and any(c in str(mode) for c in "wax+")) or bool(
        (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    if not writes and real.startswith(_install_root()):
        return
    refused.append(os.path.basename(os.fsdecode(args[0])))
    raise OutsideFileRefused("refused to open a file that was not given")


@contextlib.contextmanager
def only_these_files(paths: Sequence[str | Path]) -> Iterator[list[str]]:
    """While inside, this thread may open only ``paths`` (and, read-only, Python's installation).

    Yields the list of refused file names (basenames), filled as the code inside tries; an attempt raises
    :class:`OutsideFileRefused` where the file was opened. Other threads are not affected.
    """
    global _HOOKED
    with _HOOK_LOCK:
        if not _HOOKED:
            sys.addaudithook(_audit)  # process-wide and permanent; inert outside this context
            _HOOKED = True
    refused: list[str] = []
    token = _ALLOWED.set((frozenset(os.path.realpath(p) for p in paths), refused))
    try:
        yield refused
    finally:
        _ALLOWED.reset(token)
