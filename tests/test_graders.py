"""OpenAI's graders in-process: metrics against the reference implementations' values, templates, every refusal
naming its field, the multi formula, the python sandbox's warm pool, the reward function TRL calls."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.graders import GraderSettings, compile_grader, reward_function
from llama_stack_provider_trl.graders.python_grader import sandbox_isolation
from llama_stack_provider_trl.graders.text_metrics import METRICS

CAT = ("the cat sat on the mat today", "the cat is sitting on the mat today")
FOX = ("The quick brown fox jumps over the lazy dog.", "A quick brown fox jumped over the lazy dog.")
# Values of NLTK 3.10 (sentence_bleu, sentence_gleu, single_meteor_score without stems or synonyms), Google's
# rouge_score 0.1.2 (fmeasure, no stemmer) and rapidfuzz 3.14 (fuzz.ratio / 100) for the same pairs.
KNOWN = {
    "fuzzy_match": (0.8571428571428572, 0.9195402298850575),
    "bleu": (0.42383656282787796, 0.5253819788848316),
    "gleu": (0.5, 0.5882352941176471),
    "meteor": (0.7454289732770746, 0.7937500000000002),
    "rouge_1": (0.8, 0.7777777777777778),
    "rouge_2": (0.6153846153846153, 0.625),
    "rouge_3": (0.3636363636363636, 0.42857142857142855),
    "rouge_4": (0.2222222222222222, 0.16666666666666666),
    "rouge_5": (0.0, 0.0),
    "rouge_l": (0.8, 0.7777777777777778),
}
MODEL_SETTINGS = GraderSettings(model_base_url="http://127.0.0.1:9/v1")


def similarity(metric: str, reference: str = "{{item.reference}}") -> dict[str, Any]:
    return {
        "type": "text_similarity",
        "name": metric,
        "input": "{{sample.output_text}}",
        "reference": reference,
        "evaluation_metric": metric,
    }


def check(operation: str, reference: str = "{{item.answer}}", value: str = "{{sample.output_text}}") -> dict[str, Any]:
    return {"type": "string_check", "name": "check", "input": value, "reference": reference, "operation": operation}


@pytest.mark.parametrize("metric", list(KNOWN))
def test_each_text_similarity_metric_gives_the_reference_implementations_value(metric: str) -> None:
    grader = compile_grader(similarity(metric))
    for (answer, reference), expected in zip((CAT, FOX), KNOWN[metric], strict=True):
        assert grader.grade(answer, {"reference": reference}).reward == pytest.approx(expected, abs=1e-12)
    assert set(METRICS) == set(KNOWN)


def test_identical_texts_score_one_and_disjoint_texts_zero_on_every_metric() -> None:
    for metric in KNOWN:
        grader = compile_grader(similarity(metric, "one two three four five six"))
        # METEOR keeps its fragmentation penalty for one whole chunk: 1 - 0.5 * (1/6)^3
        assert grader.grade("one two three four five six").reward == pytest.approx(1.0, abs=0.003), metric
        assert grader.grade("lambda").reward == 0.0, metric


@pytest.mark.parametrize(
    ("operation", "reference", "answer", "reward"),
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "Paris", "paris", 0.0),
        ("ne", "Paris", "Lyon", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The answer is %", "The answer is 42", 1.0),
        ("like", "The answer is %", "the answer is 42", 0.0),
        ("like", "4_", "42", 1.0),
        ("like", "4_", "420", 0.0),
        ("like", "100\\%", "100%", 1.0),
        ("like", "100\\%", "1000", 0.0),
        ("ilike", "%PARIS%", "It is paris.", 1.0),
        ("ilike", "%paris%", "Lyon", 0.0),
    ],
)
def test_string_check_compares_as_its_operation_says(
    operation: str, reference: str, answer: str, reward: float
) -> None:
    assert compile_grader(check(operation, reference)).grade(answer).reward == reward


def test_templates_reach_nested_item_fields_list_positions_and_the_answers_json() -> None:
    grader = compile_grader(check("eq", "{{item.expected.city}}-{{item.tags[1]}}", "{{sample.output_json.city}}-b"))
    item = {"expected": {"city": "Paris"}, "tags": ["a", "b"]}
    assert grader.grade('{"city": "Paris"}', item).reward == 1.0
    assert grader.grade('{"city": "Lyon"}', item).reward == 0.0


def test_an_answer_that_is_not_json_is_a_sample_parse_error_where_a_template_needs_output_json() -> None:
    result = compile_grader(check("eq", "x", "{{sample.output_json.city}}")).grade("Paris, of course", {})
    assert (result.reward, result.errors.flags) == (0.0, {"sample_parse_error"})
    # output_text alone needs no JSON
    assert compile_grader(check("eq", "Paris")).grade("Paris", {}).errors.flags == set()


def test_a_template_variable_missing_from_the_item_is_an_invalid_variable_error() -> None:
    result = compile_grader(check("eq")).grade("4", {"other": 1})
    assert (result.reward, result.errors.flags) == (0.0, {"invalid_variable_error"})
    assert result.to_openai()["metadata"]["errors"]["invalid_variable_error"] is True


def multi(graders: dict[str, Any], formula: str) -> dict[str, Any]:
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula}


def test_multi_combines_named_sub_rewards_by_its_formula() -> None:
    grader = compile_grader(
        multi(
            {"exact": check("eq"), "close": similarity("rouge_1", "{{item.answer}} apples")},
            "0.5 * exact + max(close, 0.2) ^ 2 - abs(-0.1) + sqrt(4) / 4",
        )
    )
    result = grader.grade("4", {"answer": "4"})
    close = 2 * (1 / 1 * 1 / 2) / (1 + 1 / 2)  # rouge_1 of "4" against "4 apples"
    assert result.sub_rewards == {"exact": 1.0, "close": pytest.approx(close)}
    assert result.reward == pytest.approx(0.5 + close**2 - 0.1 + 0.5)
    assert result.to_openai()["metadata"]["scores"] == result.sub_rewards


def test_multi_accepts_the_sdks_single_grader_shape_named_by_the_graders_name() -> None:
    grader = compile_grader(multi(check("eq"), "check * 2"))
    assert grader.grade("4", {"answer": "4"}).reward == 2.0


def test_a_formula_that_fails_for_a_sample_is_a_formula_parse_error_with_reward_zero() -> None:
    result = compile_grader(multi({"exact": check("eq")}, "log(exact)")).grade("5", {"answer": "4"})
    assert (result.reward, result.errors.flags) == (0.0, {"formula_parse_error"})


@pytest.mark.parametrize(
    ("grader", "field", "message"),
    [
        (check("contains"), "grader.operation", "eq, ne, like, ilike"),
        ({**check("eq"), "extra": 1}, "grader.extra", "not a field of a string_check grader"),
        ({**check("eq"), "name": None}, "grader.name", "is required"),
        (check("eq", "{{answer}}"), "grader.reference", "starts with item. or sample."),
        (check("eq", "{{sample.output}}"), "grader.reference", "output_text, output_json"),
        (similarity("bleurt"), "grader.evaluation_metric", "rouge_l"),
        (similarity("cosine"), "grader.evaluation_metric", "grader_embedding_model"),
        ({"type": "label_model", "name": "x"}, "grader.type", "label_model only inside a multi grader"),
        ({"type": "rubric", "name": "x"}, "grader.type", "string_check, text_similarity, python"),
        ({"type": "python", "name": "p", "source": "def grade(:"}, "grader.source", "not valid Python"),
        ({"type": "python", "name": "p", "source": "x = 1"}, "grader.source", "top-level function grade"),
        (
            {"type": "python", "name": "p", "source": "def grade(s, i): return 1", "image_tag": "2025-05-08"},
            "grader.image_tag",
            "leave image_tag out",
        ),
        (
            {"type": "score_model", "name": "s", "model": "judge", "input": [{"role": "user", "content": "hi"}]},
            "grader.model",
            "grader_model_base_url",
        ),
        (multi({"acc": check("like") | {"operation": "is"}}, "acc"), "grader.graders.acc.operation", "eq, ne"),
        (multi({"acc": check("eq")}, "acc + style"), "grader.calculate_output", "'style' is not a grader name"),
        (multi({"acc": check("eq")}, "__import__('os')"), "grader.calculate_output", "calls only min, max"),
        (multi({"acc": check("eq")}, "acc.real"), "grader.calculate_output", "may hold only numbers"),
        (multi({"acc": check("eq")}, "acc +"), "grader.calculate_output", "is not a formula"),
        (multi({"acc": check("eq")}, "acc if acc else 1"), "grader.calculate_output", "may hold only numbers"),
        (multi({"inner": multi({"a": check("eq")}, "a")}, "inner"), "grader.graders.inner.type", "inside a multi"),
        (multi({}, "1"), "grader.graders", "must map names to graders"),
    ],
)
def test_a_bad_grader_is_refused_naming_the_field_and_the_fix(grader: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RequestError, match=message) as refused:
        compile_grader(grader)
    assert refused.value.field == field


def test_a_refusal_names_the_field_under_the_callers_prefix() -> None:
    with pytest.raises(RequestError) as refused:
        compile_grader(multi({"acc": check("is")}, "acc"), field="method.reinforcement.grader")
    assert refused.value.field == "method.reinforcement.grader.graders.acc.operation"
    assert str(refused.value).startswith("method.reinforcement.grader.graders.acc.operation: must be one of")


def test_model_grader_fields_are_checked_before_any_call() -> None:
    score = {"type": "score_model", "name": "s", "model": "judge", "input": [{"role": "user", "content": "hi"}]}
    with pytest.raises(RequestError) as refused:
        compile_grader({**score, "range": [1, 0]}, MODEL_SETTINGS)
    assert refused.value.field == "grader.range"
    with pytest.raises(RequestError) as refused:
        compile_grader({**score, "input": [{"role": "judge", "content": "hi"}]}, MODEL_SETTINGS)
    assert refused.value.field == "grader.input.0.role"
    label = {**score, "type": "label_model", "labels": ["good", "bad"], "passing_labels": ["great"]}
    with pytest.raises(RequestError) as refused:
        compile_grader(multi({"judge": label}, "judge"), MODEL_SETTINGS)
    assert refused.value.field == "grader.graders.judge.passing_labels"


def test_a_model_server_that_is_unreachable_gives_reward_zero_and_the_server_error_flag() -> None:
    score = {"type": "score_model", "name": "s", "model": "judge", "input": [{"role": "user", "content": "hi"}]}
    result = compile_grader(score, MODEL_SETTINGS).grade("answer")
    assert (result.reward, result.errors.flags) == (0.0, {"model_grader_server_error"})
    assert "/chat/completions" in result.to_openai()["metadata"]["errors"]["model_grader_server_error_details"]


def test_python_graders_reuse_warm_workers_across_batches() -> None:
    source = "import random\nWORKER = random.random()\ndef grade(sample, item):\n    return WORKER\n"
    grader = compile_grader({"type": "python", "name": "pid", "source": source}, GraderSettings(python_workers=2))
    first = {result.reward for result in grader.grade_batch(["a"] * 8, [{}] * 8)}
    second = {result.reward for result in grader.grade_batch(["a"] * 8, [{}] * 8)}
    assert len(first) == 2 and second <= first  # no process started for the second batch
    assert os.getpid() not in first


def test_a_python_grader_returning_a_non_number_or_raising_flags_its_sample_only() -> None:
    source = (
        "def grade(sample, item):\n"
        "    if sample['output_text'] == 'text':\n        return 'high'\n"
        "    if sample['output_text'] == 'raise':\n        raise KeyError('missing')\n"
        "    return 0.5\n"
    )
    results = compile_grader({"type": "python", "name": "p", "source": source}).grade_batch(
        ["ok", "text", "raise", "ok"], [{}] * 4
    )
    assert [result.reward for result in results] == [0.5, 0.0, 0.0, 0.5]
    failed = {"python_grader_runtime_error"}
    assert [result.errors.flags for result in results] == [set(), failed, failed, set()]
    details = [result.to_openai()["metadata"]["errors"]["python_grader_runtime_error_details"] for result in results]
    assert "grade returned str, not a number" in details[1]
    assert "KeyError: 'missing'" in details[2]


def test_the_reward_function_grades_a_trl_batch_from_the_item_column() -> None:
    graders = {"exact": check("eq"), "loose": check("ilike", "%{{item.answer}}%")}
    reward = reward_function(multi(graders, "exact + loose"))
    completions = [[{"role": "assistant", "content": text}] for text in ("4", "It is 4", "5")]
    logged: dict[str, float] = {}
    rewards = reward(
        prompts=[[{"role": "user", "content": "2+2?"}]] * 3,
        completions=completions,
        item=[json.dumps({"answer": "4"})] * 3,
        trainer_state=None,
        log_metric=logged.__setitem__,
        completion_ids=[[1]] * 3,
    )
    assert rewards == [2.0, 1.0, 0.0]
    assert reward.__name__ == "grader_combined"
    metrics = reward.last_metrics()
    assert metrics["grader/exact/mean"] == pytest.approx(1 / 3)
    assert metrics["grader/loose/mean"] == pytest.approx(2 / 3)
    assert logged == metrics


def test_the_reward_function_reads_the_items_fields_from_columns_without_an_item_column() -> None:
    reward = reward_function(check("eq"))
    assert reward(prompts=["q", "q"], completions=["4", "3"], answer=["4", "4"], trainer_state=None) == [1.0, 0.0]
    broken = reward(prompts=["q"], completions=["4"], other=["4"])
    assert broken == [0.0] and reward.last_metrics()["grader/errors/invalid_variable_error"] == 1.0


def test_a_python_grader_that_crashes_its_process_flags_that_sample_and_a_new_worker_grades_the_rest() -> None:
    source = (
        "import ctypes, random\n"
        "WORKER = random.random()\n"
        "def grade(sample, item):\n"
        "    if sample['output_text'] == 'crash':\n        ctypes.string_at(0)\n"
        "    return WORKER\n"
    )
    grader = compile_grader({"type": "python", "name": "p", "source": source}, GraderSettings(python_workers=1))
    results = grader.grade_batch(["ok", "crash", "ok"], [{}] * 3)
    assert results[1].reward == 0.0 and results[1].errors.flags == {"python_grader_runtime_error"}
    assert "SIGSEGV" in results[1].to_openai()["metadata"]["errors"]["python_grader_runtime_error_details"]
    assert results[0].reward != results[2].reward  # the third answer came from a new process
    assert results[0].errors.flags == results[2].errors.flags == set()


def test_a_python_grader_finds_the_servers_own_directories_empty(tmp_path: Path) -> None:
    if "files" not in sandbox_isolation():
        pytest.skip(f"this OS lets the sandbox isolate only: {sandbox_isolation()}")
    jobs = tmp_path / "jobs"
    (jobs / "another-users-job").mkdir(parents=True)
    (jobs / "another-users-job" / "train.jsonl").write_text('{"prompt": "private"}\n')
    python = {
        "type": "python",
        "name": "p",
        "source": "import os\ndef grade(sample, item):\n    return 0.5 + len(os.listdir(item))\n",
    }

    hidden = compile_grader(python, GraderSettings(python_workers=1, python_hidden_dirs=(str(jobs),)))
    shown = compile_grader(python, GraderSettings(python_workers=1))

    assert hidden.grade("x", str(jobs)).reward == 0.5  # an empty directory where the jobs are
    assert shown.grade("x", str(jobs)).reward == 1.5


def test_a_python_grader_over_its_cpu_time_is_stopped_by_the_cpu_limit() -> None:
    source = "def grade(sample, item):\n    while True:\n        pass\n"
    settings = GraderSettings(python_cpu_s=1, python_timeout_s=60)
    result = compile_grader({"type": "python", "name": "spin", "source": source}, settings).grade("x")
    assert (result.reward, result.errors.flags) == (0.0, {"python_grader_runtime_error"})
    assert "CPU time limit" in result.to_openai()["metadata"]["errors"]["python_grader_runtime_error_details"]


def test_a_python_grader_whose_module_fails_to_load_flags_every_sample_with_the_traceback() -> None:
    source = "import no_such_module_here\ndef grade(sample, item):\n    return 1\n"
    results = compile_grader({"type": "python", "name": "p", "source": source}).grade_batch(["a", "b"], [{}, {}])
    for result in results:
        assert (result.reward, result.errors.flags) == (0.0, {"python_grader_runtime_error"})
        assert "no_such_module_here" in result.to_openai()["metadata"]["errors"]["python_grader_runtime_error_details"]


PARENT = """
from llama_stack_provider_trl.graders import GraderSettings, compile_grader
source = "import time\\ndef grade(sample, item):\\n    time.sleep(600 * len(sample['output_text']))\\n    return 1"
settings = GraderSettings(python_workers=1, python_timeout_s=600)
grader = compile_grader({"type": "python", "name": "p", "source": source}, settings)
grader.grade("")
print("ready", flush=True)
grader.grade("wait")
"""


def workers_of(parent: int) -> list[int]:
    """The sandbox processes a process started (their command line carries its pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"sandbox_worker.py" in command and f'"parent": {parent}'.encode() in command:
            found.append(int(entry.name))
    return found


def test_python_grader_workers_end_with_the_process_that_started_them() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
    assert workers_of(parent.pid)  # with a PID namespace: its waiting parent, and the process grading
    parent.kill()
    parent.wait()
    for _ in range(100):
        if not workers_of(parent.pid):
            break
        time.sleep(0.1)
    assert workers_of(parent.pid) == []


def test_a_python_grader_writes_only_in_its_own_directory(tmp_path: Path) -> None:
    if "files" not in sandbox_isolation():
        pytest.skip(f"this OS lets the sandbox isolate only: {sandbox_isolation()}")
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    open('mine.txt', 'w').write('ok')\n"
        "    try:\n"
        "        open(item['outside'], 'w').write('escaped')\n"
        "        return 1.0\n"
        "    except OSError:\n"
        "        return 0.5\n"
    )
    outside = tmp_path / "server-file.txt"
    result = compile_grader({"type": "python", "name": "p", "source": source}).grade("x", {"outside": str(outside)})
    assert (result.reward, result.errors.flags) == (0.5, set())
    assert not outside.exists()


class Embeddings(BaseHTTPRequestHandler):
    """An embeddings model stand-in: each text as its counts of the letters a, b and c."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rows = [{"index": i, "embedding": [text.count(c) for c in "abc"]} for i, text in enumerate(body["input"])]
        data = json.dumps({"model": body["model"], "data": rows, "usage": {"prompt_tokens": 4, "total_tokens": 4}})
        self.send_response(200 if self.path == "/v1/embeddings" and body["model"] == "letters" else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_cosine_compares_the_configured_embeddings_models_vectors() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        grader = compile_grader(similarity("cosine"), GraderSettings(embedding_model="letters", embedding_base_url=url))
        result = grader.grade("aab", {"reference": "abc"})  # (2, 1, 0) against (1, 1, 1)
        assert result.reward == pytest.approx(3 / (5**0.5 * 3**0.5))
        assert result.token_usage_per_model["letters"].total_tokens == 4
        assert grader.grade("ccc", {"reference": "aaa"}).reward == 0.0
    finally:
        server.shutdown()
