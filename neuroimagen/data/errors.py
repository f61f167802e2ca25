"""The exception family for data files that cannot be read (or trials that cannot be written)."""


class DataFileError(ValueError):
    """A data file that cannot be read; the message names the file, what was expected and what came."""


class TrialFileError(DataFileError):
    """A file that cannot be read (or a trial that cannot be written) as one trial; the message names the file,
    what was expected and what came."""
