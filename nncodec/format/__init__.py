"""The .nnc container: constants, limits, records, index and trailer (spec/FORMAT.md)."""

from .constants import (  # noqa: F401
    FILE_MAGIC,
    END_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    Limits,
    DEFAULT_LIMITS,
)
