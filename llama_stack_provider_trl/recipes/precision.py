"""The precision an ``auto`` job trains in, decided on the device the training process holds."""

import torch

from llama_stack_provider_trl.common.job_spec import Precision


def resolve_auto_precision(device: str) -> Precision:
    """bf16 where the device supports it, fp16 on an accelerator that lacks it, fp32 on CPU."""
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "bf16" if torch.backends.mps.is_macos_or_newer(14, 0) else "fp16"
    return "fp32"
