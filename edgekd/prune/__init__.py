"""Structural (channel) pruning to a MACs budget with Torch-Pruning, fine-tuned by distillation."""
from .pruner import IMPORTANCE, PruneResult, prune

__all__ = ["IMPORTANCE", "PruneResult", "prune"]
