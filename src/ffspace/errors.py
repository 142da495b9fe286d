"""ffspace errors. Every error about input names where it came from: file, frame and field."""

from __future__ import annotations


class FFSpaceError(Exception):
    """Base class of every error ffspace raises on purpose."""


class DataError(FFSpaceError, ValueError):
    """Bad input data: says which file, which frame and which field."""

    def __init__(self, message: str, *, file: str | None = None, frame: int | None = None,
                 field: str | None = None):
        self.file, self.frame, self.field = file, frame, field
        self.reason = message  # without the location, so a reader can re-raise it under its own key name
        where = []
        if file is not None:
            where.append(f"file {file}")
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def validation_problems(exc, prefix: str = "") -> str:
    """A pydantic ``ValidationError`` as ``field.path: message; ...`` (``prefix`` names the enclosing section)."""
    return "; ".join(f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


class ModelPackageError(FFSpaceError):
    """A model package that cannot be read: corrupt, truncated or from an unknown version."""


class ConfigError(FFSpaceError, ValueError):
    """A configuration value that is missing, misspelled or out of range."""


class MDBlowUpError(FFSpaceError):
    """An MD run left physical territory; carries a report of where and when."""

    def __init__(self, message: str, report: dict):
        self.report = report
        super().__init__(message)


class MDUncertaintyStop(MDBlowUpError):
    """An MD run left the model's training data: the committee's force deviation passed the stop threshold."""
