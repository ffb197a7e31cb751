"""The one error type the CLI turns into a one-line message and a nonzero exit."""


class PrepError(Exception):
    """A user-facing failure: str(e) is printed as one line."""
