"""The one error type the model library raises for bad input, so callers can show it as one line."""


class ModelInputError(ValueError):
    """A request or model directory the library cannot use; the message names the problem."""


def first_line(error: BaseException) -> str:
    """An exception's first message line (library errors often append pages of context), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
