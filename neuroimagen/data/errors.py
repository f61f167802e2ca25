"""The exception family for files that cannot be read as a trial."""


class TrialFileError(ValueError):
    """A file that cannot be read as one trial; the message names the file, what was expected and what came."""
