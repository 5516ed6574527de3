"""The export's errors, in a module of their own so that each step of the package (writing, parity, INT8,
the stage) raises them without importing another."""

from __future__ import annotations


class ExportError(ValueError):
    """The model cannot be exported; the message names the graph and why."""


class ParityError(ExportError):
    """An exported graph's outputs differ from torch's by more than the stated bound."""
