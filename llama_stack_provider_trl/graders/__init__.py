"""OpenAI's graders (the ``openai`` SDK's ``types/graders``), for the server (graders/validate and graders/run,
a job's checks) and the training process (GRPO reward functions) alike. No torch, no front door imports here.

Interface::

    from llama_stack_provider_trl.graders import GraderSettings, compile_grader, reward_function

    settings = GraderSettings.from_config(provider_config)   # the operator's grader_* / python_grader_* fields
    grader = compile_grader(grader_dict, settings, field="method.reinforcement.grader")  # RequestError if bad
    result = grader.grade("model answer", {"answer": "4"})   # GraderResult; never raises for a bad sample
    result.reward, result.sub_rewards, result.errors.flags, result.to_openai()   # OpenAI's run response
    grader.grade_batch(samples, items)                         # concurrent: a thread pool, the python pool

    reward = reward_function(grader_dict, settings.to_dict())  # in the training process: GRPOTrainer reward_funcs
    reward(prompts=..., completions=..., item=[json.dumps(line_without_messages), ...])  # -> list[float]
    reward.__name__, reward.last_metrics()   # {"grader/<sub>/mean", "grader/errors/<flag>", "grader/seconds"}

The item travels as one dataset column ``item`` holding the JSON of the data line's fields besides ``messages``
(without that column, the other columns are the item). A failed sample has reward 0 and OpenAI's error flags.
"""

from llama_stack_provider_trl.graders.base import Grader
from llama_stack_provider_trl.graders.compile import SUB_GRADER_TYPES, TOP_LEVEL_TYPES, compile_grader
from llama_stack_provider_trl.graders.python_grader import close_pools
from llama_stack_provider_trl.graders.result import ERROR_FLAGS, GraderErrors, GraderResult
from llama_stack_provider_trl.graders.reward import ITEM_COLUMN, RewardFunction, reward_function
from llama_stack_provider_trl.graders.settings import GraderSettings
from llama_stack_provider_trl.graders.templates import Sample

__all__ = [
    "ERROR_FLAGS",
    "ITEM_COLUMN",
    "SUB_GRADER_TYPES",
    "TOP_LEVEL_TYPES",
    "Grader",
    "GraderErrors",
    "GraderResult",
    "GraderSettings",
    "RewardFunction",
    "Sample",
    "close_pools",
    "compile_grader",
    "reward_function",
]
