"""What grading one sample gives: OpenAI's run response (``reward``, ``sub_rewards``, ``metadata`` with its error
flags and execution time, token usage per model), as a dataclass the reward function and the run endpoint share."""

from dataclasses import asdict, dataclass, field
from typing import Any

# Every error flag of OpenAI's run response (metadata.errors), in its order. A flag set means the reward is 0.
ERROR_FLAGS: tuple[str, ...] = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)
# The flags that come with a detail string (OpenAI's *_details / *_type fields).
DETAIL_FIELDS: dict[str, str] = {
    "model_grader_server_error": "model_grader_server_error_details",
    "python_grader_runtime_error": "python_grader_runtime_error_details",
    "python_grader_server_error": "python_grader_server_error_type",
}
MAX_DETAIL_CHARS = 2000


@dataclass
class GraderErrors:
    """OpenAI's ``metadata.errors``: which failures grading met; any of them makes the reward 0."""

    flags: set[str] = field(default_factory=set)
    details: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, detail: str | None = None) -> None:
        self.flags.add(name)
        if detail is not None and name in DETAIL_FIELDS:
            self.details.setdefault(DETAIL_FIELDS[name], detail[-MAX_DETAIL_CHARS:])

    def merge(self, other: "GraderErrors") -> None:
        self.flags |= other.flags
        for key, value in other.details.items():
            self.details.setdefault(key, value)

    @property
    def failed(self) -> bool:
        return bool(self.flags)

    def to_openai(self) -> dict[str, Any]:
        body: dict[str, Any] = {name: name in self.flags for name in ERROR_FLAGS}
        for detail in DETAIL_FIELDS.values():
            body[detail] = self.details.get(detail)
        return body


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: "TokenUsage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens


@dataclass
class GraderResult:
    """One sample graded: OpenAI's run response. ``reward`` is 0 whenever ``errors.failed``."""

    reward: float
    name: str
    type: str
    errors: GraderErrors = field(default_factory=GraderErrors)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    execution_time: float = 0.0
    sampled_model_name: str | None = None
    token_usage_per_model: dict[str, TokenUsage] = field(default_factory=dict)

    @property
    def token_usage(self) -> int | None:
        if not self.token_usage_per_model:
            return None
        return sum(usage.total_tokens for usage in self.token_usage_per_model.values())

    def to_openai(self) -> dict[str, Any]:
        """The body of ``POST /v1/fine_tuning/alpha/graders/run``, as the ``openai`` SDK's GraderRunResponse."""
        return {
            "reward": self.reward,
            "sub_rewards": dict(self.sub_rewards),
            "metadata": {
                "name": self.name,
                "type": self.type,
                "execution_time": self.execution_time,
                "scores": dict(self.sub_rewards),
                "token_usage": self.token_usage,
                "sampled_model_name": self.sampled_model_name,
                "errors": self.errors.to_openai(),
            },
            "model_grader_token_usage_per_model": {
                model: asdict(usage) for model, usage in self.token_usage_per_model.items()
            },
        }
