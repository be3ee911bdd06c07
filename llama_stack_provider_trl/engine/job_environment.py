"""The environment a job's training processes start with: what a training process needs, not the server's whole one.

A job runs what its request chose (a model, trackers, a tracking server on the operator's list), so it gets the
variables that make Python, torch, CUDA and the Hugging Face libraries work as the operator set them up, and no
credential of the server's: an MLflow token, a W&B key, a Hub token or a cloud key reaches a job only when the
operator names it in ``job_environment``. The same goes for the credentials files those libraries read by default:
``NETRC`` points at an empty file (requests and wandb send a ~/.netrc login for the host they reach) and the Hub
token saved under HOME is not sent (HF_HUB_DISABLE_IMPLICIT_TOKEN) unless the operator names those variables.
"""

import os
from collections.abc import Mapping, Sequence

# Passed on as the server has them
NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "TERM",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "LD_LIBRARY_PATH",
        "CC",  # torch.compile's C++ compiler
        "CXX",
        "XDG_CACHE_HOME",  # where torch, Triton and Hugging Face keep their caches
        "SSL_CERT_FILE",  # trust stores and proxies for the trackers the operator allows
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "WANDB_BASE_URL",  # the W&B server that tracker_hosts was checked against
    }
)
# Passed on by prefix: locale, Python, devices and their libraries, CPU threads, Hugging Face, accelerate, Ray
PREFIXES = (
    "LC_",
    "PYTHON",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "HIP_",
    "ROCR_",
    "HSA_",
    "TORCH",
    "PYTORCH_",
    "TRITON_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "GOMP_",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "ACCELERATE_",
    "RAY_",
    "GLOO_",
)
# ... unless the name says it holds a credential (HF_TOKEN, RAY_..._KEY): those only when the operator names them
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
# Set for every job unless the operator passes its own (job_environment)
DEFAULTS = {"NETRC": os.devnull, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
IMPLICIT_TOKEN_GATE = {"HF_HUB_DISABLE_IMPLICIT_TOKEN": ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}


def passed_by_default(name: str) -> bool:
    upper = name.upper()
    if any(word in upper for word in SECRET_WORDS):
        return False
    return name in NAMES or name.startswith(PREFIXES)


def job_environment(
    environ: Mapping[str, str], operator_names: Sequence[str], hub_models: bool = True
) -> dict[str, str]:
    """The variables of ``environ`` a job's processes start with: those a training process needs and those the
    operator names, with the defaults that keep credentials files unread; without ``hub_models``, the Hugging
    Face libraries offline (an adapter's base named by Hub id, a tokenizer's remote files: nothing downloads)."""
    named = set(operator_names)
    env = {name: value for name, value in environ.items() if name in named or passed_by_default(name)}
    for name, value in DEFAULTS.items():
        gate = IMPLICIT_TOKEN_GATE.get(name, ())
        if name not in named and not named.intersection(gate):
            env[name] = value
    if not hub_models:
        env["HF_HUB_OFFLINE"] = "1"
    return env
