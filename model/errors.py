"""The one error type the model library raises for bad input, so callers can show it as one line."""


class ModelInputError(ValueError):
    """A request or model directory the library cannot use; the message names the problem."""
