"""The errors amodalize reports to users: each carries the file and the problem in one line."""

from __future__ import annotations

from pathlib import Path


class AmodalizeError(Exception):
    """Base of every error the CLI turns into a one-line message and a non-zero exit code."""

    exit_code = 1


class InputError(AmodalizeError):
    """A problem with an input file: `path: problem`."""

    exit_code = 2

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TrainingError(AmodalizeError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit)."""


class DeviceError(AmodalizeError):
    """The device asked for is not there (``--device cuda`` without a CUDA GPU)."""


class FormatError(ValueError):
    """A malformed field inside one record; readers re-raise it as InputError with the file name."""
