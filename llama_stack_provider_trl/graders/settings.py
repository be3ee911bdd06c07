"""What the operator decides for graders (the provider config's grader_* and python_grader_* fields), in one
value that travels to the training process as a dict. A request never sets these: the hosts a model grader
reaches and the key it sends are the operator's."""

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Self


@dataclass(frozen=True)
class GraderSettings:
    # score_model and label_model: an OpenAI-compatible server's base URL (ending in /v1), and the name of the
    # environment variable holding its API key (read when a request is sent, never from a request).
    model_base_url: str | None = None
    model_api_key_env: str | None = None
    model_timeout_s: float = 60.0
    model_concurrency: int = 8
    # text_similarity's cosine: the embeddings model, at embedding_base_url (default: model_base_url).
    embedding_model: str | None = None
    embedding_base_url: str | None = None
    # python graders: the sandbox's limits per sample, and the warm worker processes kept per grader source.
    python_timeout_s: float = 10.0
    python_cpu_s: float = 10.0
    python_memory_mb: int = 1024
    python_workers: int = 2
    # the server's own directories (its jobs, its job store, its home), each an empty directory to python graders
    python_hidden_dirs: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """From the provider config's fields of the same names prefixed ``grader_`` (model_*, embedding_*) or
        named ``python_grader_*`` (python_*), where the config has them."""
        values: dict[str, Any] = {}
        for name in (f.name for f in fields(cls)):
            key = f"python_grader_{name.removeprefix('python_')}" if name.startswith("python_") else f"grader_{name}"
            if getattr(config, key, None) is not None:
                values[name] = getattr(config, key)
        values["python_hidden_dirs"] = _server_dirs(config)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        given = {key: value for key, value in values.items() if key in known}
        return cls(**given | {"python_hidden_dirs": tuple(given.get("python_hidden_dirs", ()))})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def api_key(self) -> str | None:
        return os.environ.get(self.model_api_key_env) if self.model_api_key_env else None

    @property
    def embeddings_url(self) -> str | None:
        return self.embedding_base_url or self.model_base_url


def _server_dirs(config: Any) -> tuple[str, ...]:
    """Where the server keeps every user's jobs and records, and its own home (credentials, caches)."""
    places = [getattr(config, "output_dir", None), getattr(config, "job_store_path", None), "~"]
    if places[1]:
        places[1] = os.path.dirname(os.path.expanduser(places[1]))
    return tuple(dict.fromkeys(os.path.realpath(os.path.expanduser(place)) for place in places if place))
