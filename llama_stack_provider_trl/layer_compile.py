"""torch_compile: each decoder layer of a model compiled with torch.compile, as torchtune's ``compile`` does.

A 0.5B model at batch 8 is host-bound on an H100: its steps launch about 5,000 small kernels (norms, rotary
embedding, activations, casts, residual adds) whose Python and launch overhead outweighs their math. Compiling
the decoder layers fuses those into a few generated kernels per layer and leaves the matmuls and attention to
their library kernels. Every layer runs the same code on its own weights, so one compiled graph serves them all;
``dynamic=True`` keeps that one graph for every batch length, which varies step to step (packed rows most).
The layers' parameters and state dict keys stay as they were, so checkpoints are unchanged.
"""

import importlib.util
import os
import shutil

import torch  # and not transformers: the server imports this module to check requests


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


def check_compiler(device: str) -> None:
    """Raise CompileUnsupported when torch.compile cannot build kernels for ``device`` on this machine: C++ on a
    CPU (a compiler on PATH), Triton on a CUDA GPU."""
    if device == "cpu":
        compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
        if not any(shutil.which(c) for c in compilers):
            raise CompileUnsupported(f"compiling for the CPU needs a C++ compiler, and none of {compilers} is on PATH")
    elif device.startswith("cuda") and importlib.util.find_spec("triton") is None:  # PyPI's CUDA torch brings it
        raise CompileUnsupported("compiling for a CUDA GPU needs Triton: pip install triton")
    elif device == "mps":
        raise CompileUnsupported("torch.compile's MPS backend is experimental and not supported here")
