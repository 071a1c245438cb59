"""Errors a user can act on: entry points print them as one line instead of a traceback."""


class VisionlabError(Exception):
    """Base class: the message names the file or key, what was expected, and what to do."""


class ConfigError(VisionlabError):
    """A configuration key has a wrong type, value or combination."""


class DataError(VisionlabError):
    """A dataset file or folder is missing, unreadable or not in the expected format."""
