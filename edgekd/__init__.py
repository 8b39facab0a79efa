"""edgekd: compress a trained medical-imaging classifier into a small, fast, verified edge model."""
from .errors import (  # noqa: F401
    DataError,
    EdgekdError,
    InputError,
    LoweringError,
    MissingDependencyError,
    NotShippedError,
    TargetError,
    TeacherError,
)

__version__ = "0.1.0"
