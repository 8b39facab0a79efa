"""Low-rank factorization: convolutions and linear layers split in two by truncated SVD (see :mod:`.factorize`)."""
from .factorize import (
           LowRankConfig,
           LowRankResult,
           apply_record,
           factorize,
           layer_count,
)
from .serialize import load_lowrank, save_lowrank

__all__ = ["LowRankConfig", "LowRankResult", "apply_record", "factorize", "layer_count", "load_lowrank",
           "save_lowrank"]
