"""The exception family for data files that cannot be read."""


class DataFileError(ValueError):
    """A data file that cannot be read; the message names the file, what was expected and what came."""


class TrialFileError(DataFileError):
    """A file that cannot be read as one trial; the message names the file, what was expected and what came."""
