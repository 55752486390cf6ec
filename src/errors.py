"""The one exception type a stage reports as a one-line error (no traceback)."""


class SuiteError(Exception):
    """A problem with the user's input or the order of stages; the message says what to do."""
