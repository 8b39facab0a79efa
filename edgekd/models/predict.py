"""The one way to get a torch model's outputs on many images: eval mode, in batches, no gradients."""
from __future__ import annotations

import torch

from .._device import device_of  # defined with the rest of the device decisions


def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float32 CPU logits of ``model`` in eval mode, in batches on the model's device; its mode is restored."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                outs.append(model(images[start : start + batch_size].to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 0)

