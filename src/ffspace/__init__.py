"""ffspace: machine-learning force fields across the MM↔ML design space."""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, FFSpaceError, MDBlowUpError, ModelPackageError  # noqa: E402

__all__ = ["ConfigError", "DataError", "FFSpaceError", "MDBlowUpError", "ModelPackageError", "__version__"]
