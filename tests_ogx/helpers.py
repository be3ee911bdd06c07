import json
import struct
import time
from pathlib import Path
from typing import Any

import openai
from openai.types.fine_tuning import FineTuningJob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from llama_stack_provider_trl.common.job_spec import TENSORBOARD_DIR

FINAL = {"succeeded", "failed", "cancelled"}


def openai_preferences(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The pairs in OpenAI's DPO format: a user turn as input, one assistant answer on each side."""
    return [
        {
            "input": {"messages": [{"role": "user", "content": row["prompt"]}]},
            "preferred_output": [{"role": "assistant", "content": row["chosen"].strip()}],
            "non_preferred_output": [{"role": "assistant", "content": row["rejected"].strip()}],
        }
        for row in rows
    ]


def upload(client: openai.OpenAI, lines: list[Any] | str, purpose: str = "fine-tune") -> str:
    """A JSONL file (objects, or the text as it is) uploaded with ``purpose``; its id."""
    text = lines if isinstance(lines, str) else "".join(json.dumps(line) + "\n" for line in lines)
    return client.files.create(file=("data.jsonl", text.encode()), purpose=purpose).id  # type: ignore[arg-type]


def dpo(batch_size: int = 4, n_epochs: int = 1, learning_rate_multiplier: float = 5000, **more: Any) -> dict[str, Any]:
    """method= for a DPO job; the multiplier scales the provider's base learning rate (1e-6)."""
    hyperparameters = {
        "batch_size": batch_size,
        "n_epochs": n_epochs,
        "learning_rate_multiplier": learning_rate_multiplier,
    }
    return {"type": "dpo", "dpo": {"hyperparameters": {**hyperparameters, **more}}}


def wait_for(client: openai.OpenAI, job_id: str, done: Any, timeout_s: float = 300) -> FineTuningJob:
    deadline = time.monotonic() + timeout_s
    while not done(job := client.fine_tuning.jobs.retrieve(job_id)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status}")
        time.sleep(0.3)
    return job


def wait_final(client: openai.OpenAI, job_id: str, timeout_s: float = 300) -> FineTuningJob:
    return wait_for(client, job_id, lambda job: job.status in FINAL, timeout_s)


def step_losses(client: openai.OpenAI, job_id: str) -> dict[int, float]:
    """Training loss by step, from the job's metrics events."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return {e.data["step"]: e.data["train_loss"] for e in events if e.type == "metrics"}  # type: ignore[index]


def tensorboard_losses(job_dir: Path) -> list[float]:
    """The training losses TensorBoard shows for the job, step by step."""
    accumulator = EventAccumulator(str(job_dir / TENSORBOARD_DIR))
    accumulator.Reload()
    return [scalar.value for scalar in accumulator.Scalars("train/loss")]


def wandb_offline_run(job_dir: Path) -> tuple[Any, list[float]]:
    """The W&B run a job recorded offline (what `wandb sync` would upload): its run record (display_name, project,
    tags) and the training losses it logged. The .wandb file is a LevelDB-style log of protobuf records: 32 KiB
    blocks of (crc32c, length, type) headers, type 1 a whole record, 2, 3 and 4 its first, middle and last parts."""
    [path] = (job_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    position, parts, run, losses = header, b"", None, []
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + header])
        if kind == 0:
            break
        part = data[position + header : position + header + length]
        position += header + length
        parts = part if kind in (1, 2) else parts + part
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            if record.WhichOneof("record_type") == "run":
                run = record.run
            elif record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                losses += [float(items["train/loss"])] if "train/loss" in items else []
    return run, losses
