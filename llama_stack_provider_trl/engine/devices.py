"""Which device a job trains on, decided in the server without importing torch.

The server picks the device once at startup (so a wrong one is a 400, not a failed job). It asks the CUDA
driver itself how many devices it may use (``CUDA_VISIBLE_DEVICES`` applies, as it does for torch), which
creates no CUDA context that would hold GPU memory, and takes Apple silicon to have MPS. The training
process resolves ``auto`` precision on the device it actually holds (recipes/precision.py).
"""

import ctypes
import ctypes.util
import functools
import platform
import sys

from llama_stack_provider_trl.common.job_spec import Precision

_CUDA_LIBRARIES = ("libcuda.so.1", "libcuda.so", "libcuda.dylib", "nvcuda.dll")


@functools.cache
def _cuda_driver() -> ctypes.CDLL | None:
    """The initialised CUDA driver library, or None without one. cuInit does not create a context."""
    for name in (*_CUDA_LIBRARIES, ctypes.util.find_library("cuda")):
        if not name:
            continue
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        return driver if driver.cuInit(0) == 0 else None
    return None


def cuda_device_count() -> int:
    """Devices the CUDA driver reports (0 without a driver)."""
    driver, count = _cuda_driver(), ctypes.c_int(0)
    if driver is None or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cuda_total_memory() -> int | None:
    """Bytes of memory of the first visible CUDA device; None without one."""
    driver, device, total = _cuda_driver(), ctypes.c_int(0), ctypes.c_size_t(0)
    if driver is None or driver.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    return total.value if driver.cuDeviceTotalMem_v2(ctypes.byref(total), device) == 0 else None


def mps_available() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def resolve_device(configured: str) -> str:
    """Map the configured device (auto, cpu, mps, cuda, cuda:N) to one that exists here, or raise ValueError."""
    if configured == "auto":
        if cuda_device_count():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if configured.startswith("cuda"):
        count = cuda_device_count()
        index = int(configured.split(":", 1)[1]) if ":" in configured else 0
        if index >= count:
            raise ValueError(f"device '{configured}' is not available: this machine has {count} CUDA device(s)")
    if configured == "mps" and not mps_available():
        raise ValueError("device 'mps' is not available on this machine")
    return configured


def check_precision(device: str, precision: Precision) -> None:
    """Raise ValueError for a precision the device cannot train in (known before any process starts)."""
    if precision == "fp16" and device == "cpu":
        raise ValueError("fp16 mixed precision needs a GPU; on CPU use bf16 or fp32")
