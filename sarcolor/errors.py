"""The exception types that the CLI turns into a one-line message and a non-zero exit, and the one error
for a missing PyTorch."""


class SarColorError(Exception):
    """A user-facing problem (bad input, bad option). Its message is shown as is, without a traceback."""

    exit_code = 2


class WriteFailed(SarColorError):
    """An output could not be written whole (a full disk, say); nothing was left at its path. Not the user's
    input's fault, hence exit code 1 rather than 2."""

    exit_code = 1


TRAIN_EXTRA = "pip install 'sarcolor[train]'"


def require_torch(what: str = "this model") -> None:
    """A one-line error where PyTorch is needed but not installed (the light install runs without it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SarColorError(f"{what} needs PyTorch: {TRAIN_EXTRA}") from None
