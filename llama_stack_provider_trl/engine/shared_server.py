"""What a careful operator of a server shared by several users sets (docs/config.md, "Running a shared server"),
said at start-up when a server with authentication leaves it unset; and whether callers see the server's paths."""

import logging
import os
import re
import sys
from pathlib import Path

import yaml

from llama_stack_provider_trl.config import TrlPostTrainingConfig

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def server_has_auth(config_variable: str) -> bool:
    """Whether the server's run config, whose path its CLI puts in ``config_variable`` (Llama Stack's
    LLAMA_STACK_CONFIG, OGX's OGX_CONFIG), sets server.auth. No such file (library mode): no authentication."""
    path = os.environ.get(config_variable)
    try:
        config = yaml.safe_load(Path(path).read_text()) if path else None
    except (OSError, yaml.YAMLError):
        return False
    server = config.get("server") if isinstance(config, dict) else None
    return isinstance(server, dict) and bool(server.get("auth"))


def warn_if_open(config: TrlPostTrainingConfig, auth: bool) -> None:
    """Log the start-up warnings of a server with authentication that leaves a careful operator's setting unset."""
    for warning in shared_server_warnings(config, auth):
        logger.warning("TRL training on a shared server: %s (docs/config.md, Running a shared server)", warning)


def shows_server_paths(config: TrlPostTrainingConfig, auth: bool) -> bool:
    """Whether job status shows the job's directory, log path, process id and trackers' paths to callers: auto
    shows them on a server without authentication (one user, the operator) and hides them with it."""
    return not auth if config.show_server_paths == "auto" else config.show_server_paths


def without_server_paths(text: str, job_dir: Path) -> str:
    """``text`` (a job's error, its log's last lines) with the server's own places named by what they are: the job's
    directory, the jobs' directory, the Python installation and this package (tracebacks), the operator's home."""
    places = {
        job_dir: "<job_dir>",
        job_dir.parent: "<output_dir>",
        Path(sys.prefix): "<python>",
        Path(sys.base_prefix): "<python>",
        PACKAGE_DIR.parent: "<package>",
        Path.home(): "~",
    }
    named = {}
    for place, name in places.items():
        for spelling in {str(place), str(place.resolve())}:
            if len(spelling) > 1:  # never "/"
                named.setdefault(spelling, name)
    for spelling in sorted(named, key=len, reverse=True):  # the job's directory before the jobs' and the home
        text = re.sub(re.escape(spelling) + r"(?![\w.-])", named[spelling], text)
    return text


def shared_server_warnings(config: TrlPostTrainingConfig, auth: bool) -> list[str]:
    """One line per setting that leaves a server with authentication open to its users' reach."""
    if not auth:
        return []
    warnings = []
    if config.allowed_model_dirs is None:
        warnings.append("allowed_model_dirs is unset: a request may train from any model directory the server reads")
    if config.hub_models:
        warnings.append(
            "hub_models is on: a request may name any Hugging Face Hub model, downloaded over the server's network"
        )
    if config.show_server_paths is True:
        warnings.append("show_server_paths is on: every reader of a job sees the server's paths and process ids")
    if config.max_queued_jobs_per_user is None:
        warnings.append("max_queued_jobs_per_user is unset: one user may fill the queue")
    return warnings
