"""Exceptions raised by eventlm. Each message names the file, the line or entry, and the problem."""

from __future__ import annotations


class EventlmError(Exception):
    """Base class of every error eventlm raises on purpose."""


class EventFormatError(EventlmError, ValueError):
    """Malformed input: names the file, the line (CSV, 1-based) or entry (ROOT/Parquet, 0-based)."""

    def __init__(self, path, problem: str, *, line: int | None = None, entry: int | None = None):
        self.path = str(path)
        self.problem = problem = one_line(problem)
        self.line = line
        self.entry = entry
        where = self.path
        if line is not None:
            where += f", line {line}"
        if entry is not None:
            where += f", entry {entry}"
        super().__init__(f"{where}: {problem}")


class TokenizationError(EventlmError, ValueError):
    """Events the tokenizer cannot encode (NaN/inf kinematics, unknown kinds)."""


class CheckpointMismatchError(EventlmError, ValueError):
    """A tokenizer or checkpoint that does not match the model or the package version."""


class ModelDirError(EventlmError):
    """A model directory that cannot be used: a missing or unreadable file, an unavailable device."""


class MissingModelFileError(ModelDirError, FileNotFoundError):
    """A model directory, or a file it must hold, that does not exist."""


class OutputError(EventlmError):
    """An output that cannot be written (refused before any work, or a fault while writing it): the
    message names the output's final name, never a temporary file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem = one_line(problem)
        super().__init__(f"{self.path}: {problem}")


class ConfigError(EventlmError, ValueError):
    """A run config, study config or command-line option of the wrong type or out of range."""


def one_line(message, limit: int = 400) -> str:
    """``message`` on one line (whitespace runs collapsed), cut to about ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MissingExtraError(EventlmError, ModuleNotFoundError):
    """A feature needs an optional dependency that is not installed (names the extra to install)."""


class StaleFileError(CheckpointMismatchError):
    """A file derived from a model's weights (calibration, sampling table, export) that was made from
    other weights, or that records none: names the file and the weights it belongs to."""
