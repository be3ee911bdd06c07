"""OpenAI's grader endpoints on a real `ogx run`, through the openai client's ``fine_tuning.alpha.graders``:
every grader type validated and run, model graders against a stand-in chat server on 127.0.0.1 (it stands for
the operator's remote model), refusals naming the field, and python graders contained: a runaway, a secret in
the server's environment, the server's own directories, a connection attempt."""

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import openai
import pytest

from llama_stack_provider_trl.demo.stack_server import StackServer
from llama_stack_provider_trl.graders.python_grader import sandbox_isolation

from conftest import client_for, ogx_server

SECRET = "s3cret-server-token"
JUDGE_KEY = "judge-key-from-the-operator"


class Judge(BaseHTTPRequestHandler):
    """A chat model stand-in: SCORE prompts get a number (7 when the answer holds 4, else 2), LABEL prompts a JSON
    label, FAIL a 500, RAMBLE text with no score."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.seen.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][-1]["content"]
        if "FAIL" in prompt:
            self._answer(500, {"error": {"message": "overloaded"}})
            return
        if "LABEL" in prompt:
            text = json.dumps({"result": "correct" if "4" in prompt else "wrong"})
        elif "RAMBLE" in prompt:
            text = "I would rather not put a number on it."
        else:
            text = "7" if "answer: 4" in prompt else "2"
        usage = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
        message = {"role": "assistant", "content": text, "refusal": None}
        self._answer(200, {"model": body["model"], "choices": [{"index": 0, "message": message}], "usage": usage})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def graders_server(tmp_path_factory: pytest.TempPathFactory, judge_url: str) -> Iterator[StackServer]:
    env = {"GRADER_TEST_SECRET": SECRET, "JUDGE_KEY": JUDGE_KEY}
    home = tmp_path_factory.mktemp("ogx-graders")
    limits = {"python_grader_timeout_s": 3, "python_grader_memory_mb": 512}
    with ogx_server(
        home, env=env, grader_model_base_url=judge_url, grader_model_api_key_env="JUDGE_KEY", **limits
    ) as s:
        yield s


@pytest.fixture(scope="module")
def graders(graders_server: StackServer) -> Any:
    return client_for(graders_server).fine_tuning.alpha.graders


def run(graders: Any, grader: dict[str, Any], sample: str, item: Any = None) -> dict[str, Any]:
    return graders.run(grader=grader, model_sample=sample, item=item or {}).to_dict()


def check(operation: str, reference: str) -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": "check",
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
    }


def python(source: str) -> dict[str, Any]:
    return {"type": "python", "name": "code", "source": source}


SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "judge-model",
    "input": [
        {"role": "system", "content": "Score the answer from 0 to 10."},
        {"role": "user", "content": "SCORE question: {{item.question}} answer: {{sample.output_text}}"},
    ],
    "range": [0, 10],
    "sampling_params": {"temperature": 0, "max_completions_tokens": 5},
}
LABEL = {
    "type": "label_model",
    "name": "verdict",
    "model": "judge-model",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "LABEL {{sample.output_text}}"}]}],
    "labels": ["correct", "wrong"],
    "passing_labels": ["correct"],
}
MULTI = {
    "type": "multi",
    "name": "combined",
    "graders": {
        "exact": check("eq", "{{item.answer}}"),
        "verdict": LABEL,
        "length": python("def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / 4)\n"),
    },
    "calculate_output": "0.5 * exact + 0.25 * verdict + 0.25 * length ^ 2",
}


def test_validate_echoes_each_grader_type(graders: Any) -> None:
    similarity = {**check("eq", "x"), "type": "text_similarity", "evaluation_metric": "rouge_l"}
    del similarity["operation"]
    for grader in (check("like", "%4%"), similarity, python("def grade(s, i):\n    return 1\n"), SCORE, MULTI):
        answer = graders.with_raw_response.validate(grader=grader).http_response.json()
        assert answer == {"grader": grader}
    assert graders.validate(grader=MULTI).grader.type == "multi"  # the SDK's own parse of the answer


def test_string_check_runs_each_operation(graders: Any) -> None:
    cases = [("eq", "4", "4", 1), ("eq", "4", "5", 0), ("ne", "4", "5", 1), ("like", "%is 4", "it is 4", 1)]
    cases += [("like", "%IS 4", "it is 4", 0), ("ilike", "%IS _", "it is 4", 1), ("ilike", "%is 5", "it is 4", 0)]
    for operation, reference, sample, reward in cases:
        answer = run(graders, check(operation, reference), sample)
        assert answer["reward"] == reward, (operation, reference, sample)
        assert answer["metadata"]["type"] == "string_check" and not any(
            value for value in answer["metadata"]["errors"].values()
        )


def test_text_similarity_runs_each_metric(graders: Any) -> None:
    # NLTK's, rouge_score's and rapidfuzz's values for this pair (tests/test_graders.py compares more)
    expected = {"fuzzy_match": 0.8571428571428572, "bleu": 0.42383656282787796, "gleu": 0.5}
    expected |= {"meteor": 0.7454289732770746, "rouge_1": 0.8, "rouge_2": 0.6153846153846153}
    expected |= {"rouge_3": 0.3636363636363636, "rouge_4": 0.2222222222222222, "rouge_5": 0.0, "rouge_l": 0.8}
    for metric, value in expected.items():
        grader = {
            "type": "text_similarity",
            "name": metric,
            "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}",
            "evaluation_metric": metric,
        }
        answer = run(
            graders, grader, "the cat sat on the mat today", {"reference": "the cat is sitting on the mat today"}
        )
        assert answer["reward"] == pytest.approx(value, abs=1e-9), metric


def test_cosine_is_refused_naming_the_metric_when_no_embeddings_model_is_configured(graders: Any) -> None:
    grader = {
        "type": "text_similarity",
        "name": "cos",
        "input": "{{sample.output_text}}",
        "reference": "x",
        "evaluation_metric": "cosine",
    }
    with pytest.raises(openai.BadRequestError) as refused:
        graders.validate(grader=grader)
    assert refused.value.body["param"] == "grader.evaluation_metric"  # type: ignore[index]
    assert "grader_embedding_model" in refused.value.body["message"]  # type: ignore[index]


def test_a_python_grader_reads_the_sample_and_the_item(graders: Any) -> None:
    source = "def grade(sample, item):\n    return float(sample['output_json']['n'] == item['n']) + 0.5\n"
    answer = run(graders, python(source), '{"n": 3}', {"n": 3})
    assert answer["reward"] == 1.5
    assert answer["metadata"]["type"] == "python" and answer["metadata"]["execution_time"] > 0


def test_score_model_asks_the_operators_model_with_its_key_and_reports_its_tokens(graders: Any) -> None:
    Judge.seen.clear()
    answer = run(graders, SCORE, "4", {"question": "2+2?"})
    assert answer["reward"] == 7
    assert answer["model_grader_token_usage_per_model"] == {
        "judge-model": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    }
    assert answer["metadata"]["sampled_model_name"] == "judge-model" and answer["metadata"]["token_usage"] == 12
    [call] = Judge.seen
    assert call["authorization"] == f"Bearer {JUDGE_KEY}"
    assert call["body"]["messages"][-1]["content"] == "SCORE question: 2+2? answer: 4"
    assert call["body"]["temperature"] == 0 and call["body"]["max_tokens"] == 5
    assert run(graders, SCORE, "5", {"question": "2+2?"})["reward"] == 2


def test_model_grader_failures_give_reward_zero_and_their_flags(graders: Any) -> None:
    rambling = {**SCORE, "input": [{"role": "user", "content": "RAMBLE {{sample.output_text}}"}]}
    answer = run(graders, rambling, "4")
    assert answer["reward"] == 0 and answer["metadata"]["errors"]["model_grader_parse_error"] is True
    failing = {**SCORE, "input": [{"role": "user", "content": "FAIL {{sample.output_text}}"}]}
    errors = run(graders, failing, "4")["metadata"]["errors"]
    assert errors["model_grader_server_error"] is True
    assert "HTTP 500" in errors["model_grader_server_error_details"]


def test_multi_combines_a_string_check_a_label_model_and_a_python_grader(graders: Any) -> None:
    answer = run(graders, MULTI, "4", {"answer": "4"})
    assert answer["sub_rewards"] == {"exact": 1.0, "verdict": 1.0, "length": 0.25}
    assert answer["reward"] == pytest.approx(0.5 + 0.25 + 0.25 * 0.25**2)
    assert answer["metadata"]["type"] == "multi" and answer["metadata"]["scores"] == answer["sub_rewards"]
    wrong = run(graders, MULTI, "five", {"answer": "4"})
    assert wrong["sub_rewards"] == {"exact": 0.0, "verdict": 0.0, "length": 1.0} and wrong["reward"] == 0.25


def test_bad_graders_are_refused_naming_the_field(graders: Any) -> None:
    bad = {**MULTI, "graders": {**MULTI["graders"], "exact": check("contains", "4")}}
    with pytest.raises(openai.BadRequestError) as refused:
        graders.run(grader=bad, model_sample="4", item={})
    assert refused.value.body["param"] == "grader.graders.exact.operation"  # type: ignore[index]
    assert "eq, ne, like, ilike" in refused.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        graders.validate(grader={**MULTI, "calculate_output": "exact + open('x')"})
    assert refused.value.body["param"] == "grader.calculate_output"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        graders.run(grader=check("eq", "4"), model_sample=None, item={})  # type: ignore[arg-type]
    assert refused.value.body["param"] == "model_sample"  # type: ignore[index]


def test_a_runaway_python_grader_is_stopped_with_reward_zero_and_the_server_answers_on(graders: Any) -> None:
    spinning = run(graders, python("def grade(sample, item):\n    while True:\n        pass\n"), "x")
    assert spinning["reward"] == 0 and spinning["metadata"]["errors"]["unresponsive_reward_error"] is True
    hungry = run(graders, python("def grade(sample, item):\n    return len(bytearray(8 * 1024**3))\n"), "x")
    errors = hungry["metadata"]["errors"]
    assert hungry["reward"] == 0 and errors["python_grader_runtime_error"] is True
    assert "MemoryError" in errors["python_grader_runtime_error_details"]
    assert run(graders, check("eq", "x"), "x")["reward"] == 1


def test_a_python_grader_sees_none_of_the_servers_environment(graders: Any) -> None:
    """Neither in its own environment nor in any process's /proc/<pid>/environ (the server's among them)."""
    source = (
        "import glob, os\n"
        "def grade(sample, item):\n"
        "    leaked = [k for k, v in os.environ.items() if 's3cret' in v or 'judge-key' in v or 'SECRET' in k]\n"
        "    for path in glob.glob('/proc/*/environ'):\n"
        "        try:\n"
        "            leaked += [path] if b's3cret' in open(path, 'rb').read() else []\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 1.0 if leaked else 0.5\n"
    )
    if "/proc" not in sandbox_isolation():  # the server's /proc/<pid>/environ stays readable: its own env only
        source = source.replace("/proc/*/environ", "/no-proc-namespace-here")
    answer = run(graders, python(source), "x")
    assert answer["reward"] == 0.5, answer["metadata"]["errors"]


def test_a_python_grader_finds_the_servers_jobs_job_store_and_home_empty(
    graders_server: StackServer, graders: Any
) -> None:
    if "files" not in sandbox_isolation():
        pytest.skip(f"this OS lets the sandbox isolate only: {sandbox_isolation()}")
    state = Path(graders_server.env["TRL_OGX_DIR"])  # every user's files and jobs, and the job store
    places = [str(state), str(state / "jobs"), graders_server.env["HOME"]]
    assert all(os.listdir(place) for place in places[::2])
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    return 0.5 + sum(len(os.listdir(p)) for p in item['places'] if os.path.isdir(p))  # empty, or gone\n"
    )
    answer = run(graders, python(source), "x", {"places": places})
    assert answer["reward"] == 0.5, answer["metadata"]["errors"]


def test_a_python_grader_cannot_reach_the_network(graders: Any) -> None:
    if "network" not in sandbox_isolation():
        pytest.skip(f"this OS lets the sandbox isolate only: {sandbox_isolation()}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', item['port']), timeout=2).close()\n"
        "        return 1.0\n"
        "    except OSError:\n"
        "        return 0.5\n"
    )
    answer = run(graders, python(source), "x", {"port": listener.getsockname()[1]})
    assert answer["reward"] == 0.5
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
