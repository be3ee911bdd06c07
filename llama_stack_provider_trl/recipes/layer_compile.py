"""torch_compile: each decoder layer of a model compiled with torch.compile, as torchtune's ``compile`` does.

A 0.5B model at batch 8 is host-bound on an H100: its steps launch about 5,000 small kernels (norms, rotary
embedding, activations, casts, residual adds) whose Python and launch overhead outweighs their math. Compiling
the decoder layers fuses those into a few generated kernels per layer and leaves the matmuls and attention to
their library kernels. Every layer runs the same code on its own weights, so one compiled graph serves them all;
``dynamic=True`` keeps that one graph for every batch length, which varies step to step (packed rows most).
The layers' parameters and state dict keys stay as they were, so checkpoints are unchanged.
"""

import torch


class CompileUnsupported(ValueError):
    """The model has no decoder layer class to compile, or this machine cannot compile for the device."""


def compile_decoder_layers(model: torch.nn.Module) -> int:
    """Compile each decoder layer of ``model`` in place (compilation itself happens at its first call); return how
    many layers will run compiled. The layers are the classes transformers keeps whole when it splits a model."""
    block_names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in block_names]
    if not layers:
        raise CompileUnsupported(f"{type(model).__name__} names no decoder layer class to compile (_no_split_modules)")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
