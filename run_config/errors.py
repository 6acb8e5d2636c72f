"""Toolkit exceptions that the CLIs turn into one line and an exit code."""

from __future__ import annotations


class LexiconError(Exception):
    """Base class for errors reported to the user as one line."""

    exit_code = 1


class ConfigError(LexiconError):
    """A run config or command line is invalid; lists every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataError(LexiconError):
    """An input file is malformed at a given line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")
