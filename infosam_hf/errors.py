"""Errors that the commands report as one ``error: ...`` line, and how that line is made."""

from __future__ import annotations

__all__ = ["UsageError", "error_line"]


class UsageError(ValueError):
    """A command-line problem (a missing, malformed or contradictory option)."""


def error_line(err: BaseException) -> str:
    """One line for an error, also when a DataLoader worker wrapped it in its traceback text (errors with
    ``full_report`` set keep all their lines)."""
    text = str(err).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: the cause is the last line
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    if getattr(err, "full_report", False):  # a list of problems (e.g. DataValidationError): keep every line
        return text
    lines = text.splitlines()
    return lines[0] if lines else type(err).__name__
