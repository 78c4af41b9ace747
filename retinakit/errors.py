"""One error hierarchy for retinakit.

Every error a user can cause (bad file, bad option, bad checkpoint) is a
:class:`RetinakitError`. The CLI prints it as a single line
``error: <what>, <where>; <likely fix>`` and exits with status 2.
"""

from __future__ import annotations


class RetinakitError(Exception):
    """Base class: a problem the user can fix. ``where`` names the file/field, ``fix`` the remedy."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as one line: what, where, likely fix."""
        parts = [self.what]
        if self.where:
            parts.append(f"in {self.where}")
        msg = " ".join(parts)
        if self.fix:
            msg += f"; {self.fix}"
        return " ".join(msg.split())


class DataError(RetinakitError):
    """A recording or data file is missing, unreadable or inconsistent."""


class FormatError(DataError):
    """A file is not in the format expected (not HDF5, missing group, wrong shape...)."""


class ConfigError(RetinakitError):
    """An option, mapping file or sweep file is invalid."""


class ModelError(RetinakitError):
    """A model cannot be built, fit or used (geometry mismatch, numerical fault)."""


class CheckpointError(RetinakitError):
    """A checkpoint or run folder is missing, corrupt, or unsafe to load."""


class OutputError(RetinakitError):
    """Results cannot be written (read-only folder, disk full)."""
