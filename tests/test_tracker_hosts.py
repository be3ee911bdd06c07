"""The hosts a request's tracker may reach (tracker_hosts) and the environment a job's process gets, in-process; a
real job's process (started by JobManager) holds none of the server's credentials."""

from http import HTTPStatus

import pytest

from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_environment import job_environment
from llama_stack_provider_trl.engine.tracker_hosts import check_tracker_url

FIELD = "integrations[0].mlflow.tracking_uri"


@pytest.mark.parametrize(
    ("url", "allowed", "problem"),
    [
        ("http://169.254.169.254/latest/meta-data", [], "not among the server's tracker_hosts (none"),
        ("http://mlflow.evil.test:5000", ["mlflow.example.com"], "not among the server's tracker_hosts"),
        ("http://example.com.evil.test", ["*.example.com"], "not among"),
        # a listed name (or a wildcard) that resolves to loopback, private or link-local space needs its network
        ("http://localhost:5000", ["localhost"], "private, loopback or link-local"),
        ("http://localhost:5000", ["*.localhost", "localhost", "10.0.0.0/8"], "private, loopback or link-local"),
        ("http://[::ffff:169.254.169.254]/", ["10.0.0.0/8"], "not among"),
        ("http://10.1.2.3/", ["*.example.com", "10.0.0.0/16"], "not among"),
        ("http://user:pw@mlflow.example.com/", ["mlflow.example.com"], "user name or password"),
        ("ftp://mlflow.example.com/", ["mlflow.example.com"], "not an http(s) URL"),
    ],
)
def test_a_tracker_host_the_operator_did_not_allow_is_refused_naming_the_field(
    url: str, allowed: list[str], problem: str
) -> None:
    with pytest.raises(RequestError) as refused:
        check_tracker_url(url, FIELD, allowed)
    assert refused.value.field == FIELD and problem in str(refused.value)


def test_a_refused_host_is_forbidden_and_an_allowed_one_passes() -> None:
    with pytest.raises(RequestError) as refused:
        check_tracker_url("http://169.254.169.254/", FIELD, [])
    assert refused.value.status == HTTPStatus.FORBIDDEN
    check_tracker_url("http://localhost:5000", FIELD, ["localhost", "127.0.0.0/8", "::1/128"])
    check_tracker_url("http://10.1.2.3:5000/", FIELD, ["10.0.0.0/8"])
    check_tracker_url("https://8.8.8.8/", FIELD, ["8.8.8.8"])


def test_a_job_gets_what_training_needs_and_only_the_credentials_the_operator_names() -> None:
    server = {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/src",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "OMP_NUM_THREADS": "4",
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": "hf_secret",
        "MLFLOW_TRACKING_TOKEN": "mlflow-secret",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "WANDB_API_KEY": "wandb-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "RAY_AUTH_TOKEN": "ray-secret",
        "DATABASE_URL": "postgres://op:pw@db/x",
        "NETRC": "/home/op/.netrc",
    }

    env = job_environment(server, operator_names=[])

    assert {name: env[name] for name in ("PATH", "HOME", "LC_ALL", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")} == {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/src",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    assert env["OMP_NUM_THREADS"] == "4" and env["HF_HUB_OFFLINE"] == "1"
    assert not [value for value in env.values() if "secret" in value or "pw" in value]
    assert env["NETRC"] != "/home/op/.netrc" and env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"

    named = job_environment(server, operator_names=["MLFLOW_TRACKING_TOKEN", "HF_TOKEN"])
    assert named["MLFLOW_TRACKING_TOKEN"] == "mlflow-secret" and named["HF_TOKEN"] == "hf_secret"
    assert "HF_HUB_DISABLE_IMPLICIT_TOKEN" not in named and "WANDB_API_KEY" not in named
