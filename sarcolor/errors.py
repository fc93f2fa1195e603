"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class SarColorError(Exception):
    """A user-facing problem (bad input, bad option). Its message is shown as is, without a traceback."""
