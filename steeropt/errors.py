"""Errors for bad input. The CLI prints them without a traceback and exits with code 2."""
from __future__ import annotations


class SteeroptError(Exception):
    """Bad input or an unusable resource: the message names what is wrong."""

    exit_code = 2


class SpecError(SteeroptError):
    """A spec file is malformed. Names the file and the field."""

    def __init__(self, file: str | None, field: str | None, message: str):
        self.file, self.field, self.message = file, field, message
        where = f"{file}" if file else "<inline spec>"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


class ModelError(SteeroptError):
    """A model file is missing, corrupt or of an unsupported architecture."""


class InterventionError(SteeroptError):
    """An intervention is impossible on this model (unknown layer, head out of range, wrong size, NaN)."""


class JudgeError(SteeroptError):
    """A judge is misconfigured (not: a single call failing, which makes that sample *missing*)."""
