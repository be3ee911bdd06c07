"""The training settings every algorithm shares, checked against the device and the provider config: optimizer,
warmup, precision, the provider config's LoRA (and QLoRA), padding, master weights, torch.compile."""

import importlib.util
import os
import shutil
from typing import Any

from llama_stack_provider_trl.common.job_rules import master_weights_problem
from llama_stack_provider_trl.common.job_spec import OPTIMIZERS, LoraSpec, Precision
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.devices import check_precision
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.engine.values import number

MAX_WARMUP_STEPS = 10_000_000
# Fewer distinct batch shapes on a GPU; on a CPU padding is pure waste.
AUTO_PAD_MULTIPLE_CUDA = 128
_DTYPES: dict[str, Precision] = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
}
_MIXED_PRECISION: dict[str, Precision] = {"auto": "auto", "bf16": "bf16", "fp16": "fp16", "no": "fp32"}


def optimizer(given: Given[str] | None) -> str:
    if given is None:
        return "adamw"
    if given.value not in OPTIMIZERS:
        raise RequestError(given.field, f"unknown optimizer {given.value!r}; use one of {', '.join(OPTIMIZERS)}")
    return given.value


def warmup_steps(given: Given[int]) -> int:
    return int(number(given, MAX_WARMUP_STEPS, zero_ok=True))


def precision(dtype: Given[str] | None, config: TrlPostTrainingConfig, device: str) -> Precision:
    if dtype is None:
        precision = _MIXED_PRECISION[config.mixed_precision]
    else:
        precision = _DTYPES.get(str(dtype.value).lower())
        if precision is None:
            raise RequestError(dtype.field, f"unknown dtype {dtype.value!r}; use bf16, fp16 or fp32")
    try:
        check_precision(device, precision)
    except ValueError as exc:
        raise RequestError(dtype.field if dtype else "mixed_precision", str(exc)) from exc
    return precision


def lora(job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]) -> LoraSpec | None:
    if not job.use_lora:
        return None
    if job.qlora:
        check_qlora(f"{overrides.field}.qlora", device)
    return LoraSpec(
        rank=job.lora_rank,
        alpha=job.lora_alpha,
        dropout=job.lora_dropout,
        target_modules=job.lora_target_modules,
        quantize_4bit=job.qlora,
        merge_adapter=job.merge_adapter,
    )


def check_qlora(field: str, device: str) -> None:
    if not device.startswith("cuda"):
        raise RequestError(field, f"4-bit QLoRA needs a CUDA device, this server trains on {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RequestError(field, "4-bit QLoRA needs bitsandbytes: pip install bitsandbytes")


def pad_multiple(job: TrlPostTrainingConfig, device: str) -> int | None:
    if job.pad_to_multiple_of == "auto":  # a job that runs packed pads nothing: the recipe knows if it does
        return AUTO_PAD_MULTIPLE_CUDA if device.startswith("cuda") else None
    return job.pad_to_multiple_of


def master_weights(job: TrlPostTrainingConfig, precision: Precision, overrides: Given[dict[str, Any]]) -> str:
    problem = master_weights_problem(job.master_weights, precision)
    if problem is not None:
        raise RequestError(f"{overrides.field}.master_weights", problem)
    return job.master_weights


def torch_compile(job: TrlPostTrainingConfig, device: str, overrides: Given[dict[str, Any]]) -> bool:
    """torch.compile needs a C++ compiler to build CPU kernels and Triton to build CUDA ones."""
    if not job.torch_compile:
        return False
    problem = None
    if device == "cpu":
        compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
        if not any(shutil.which(c) for c in compilers):
            problem = f"compiling for the CPU needs a C++ compiler, and none of {compilers} is on PATH"
    elif device.startswith("cuda") and importlib.util.find_spec("triton") is None:  # PyPI's CUDA torch brings it
        problem = "compiling for a CUDA GPU needs Triton: pip install triton"
    elif device == "mps":
        problem = "torch.compile's MPS backend is experimental and not supported here"
    if problem:
        raise RequestError(f"{overrides.field}.torch_compile", f"{problem}; set torch_compile: false")
    return True
