"""Serving: the OGX server's chat completions (inline::trl) against raw ``model.generate`` on the same model and
prompts, then several clients at once.

    .venv-ogx/bin/python bench/serving_bench.py [--shape small] [--tokens N] [--prompts P] [--clients C] [--threads T]

Model: a Llama of the shape asked for, random weights, built locally (``small``: SmolLM2-135M's shape, 30 layers of
576; ``tiny``: the tests' 2 layers of 64), saved once under --workdir; greedy, ``max_tokens`` N, end of sequence
ignored by neither arm (both stop at the same tokens). Arms, each with T CPU threads:

  raw_generate   this file with --raw: AutoModelForCausalLM.generate on each prompt in turn (the chat template
                 applied as the server applies it); time to first token from a streamer's first new token
  server_1       a real `ogx run ogx-run.yaml` (serving config: device, cpu_threads T, the model under `models`) and
                 one openai client streaming chat.completions, prompt after prompt
  server_C       C clients at once (threads), each streaming its own prompts: generated tokens a second summed

Prints per arm generated tokens/s and median time to first token, the memory the server reports for the loaded
model, then `server_1/raw_generate tokens_per_s ratio: X` and `server_C/server_1 tokens_per_s ratio: Y`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "heads": 4, "kv_heads": 2},
    "small": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "heads": 9, "kv_heads": 3},
}
QUESTIONS = [
    f"What is {a} plus {b}? Answer in a sentence."
    for a, b in ((2, 3), (4, 1), (6, 2), (3, 3), (7, 1), (5, 4), (2, 2), (9, 0))
]


def build_model(shape: str, directory: Path) -> Path:
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llama_stack_provider_trl.demo.tiny_model import build_tokenizer
    from llama_stack_provider_trl.demo.toy_data import arithmetic_preferences, corpus

    tokenizer = build_tokenizer(corpus(arithmetic_preferences(64)) + QUESTIONS)
    size = SHAPES[shape]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size["hidden_size"],
        intermediate_size=size["intermediate_size"],
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=None,  # random weights: no arm stops early, both generate every token asked for
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def raw_generate(model_dir: Path, prompts: int, tokens: int) -> dict[str, Any]:
    """The raw arm, in its own process with the server's thread count: generated tokens/s and TTFT."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:  # the first put is the prompt
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    def one(question: str) -> tuple[int, float, float]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        streamer = FirstToken()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=tokens,
                streamer=streamer,
                pad_token_id=tokenizer.pad_token_id,
            )
        return out.shape[1] - ids.shape[1], streamer.at - start, time.perf_counter() - start

    one(QUESTIONS[0])  # warm-up, as the server's first request loads the model
    results = [one(QUESTIONS[i % len(QUESTIONS)]) for i in range(prompts)]
    generated, elapsed = sum(r[0] for r in results), sum(r[2] for r in results)
    return {
        "tokens_per_s": generated / elapsed,
        "ttft_s": statistics.median(r[1] for r in results),
        "tokens": generated,
    }


def stream_one(client: Any, model: str, question: str, tokens: int) -> tuple[int, float, float]:
    start = time.perf_counter()
    first = 0.0
    usage = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"skip_special_tokens": False},
    )
    for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    return usage.completion_tokens, first - start, time.perf_counter() - start


def server_arms(
    model_dir: Path, workdir: Path, prompts: int, tokens: int, clients: int, threads: int
) -> dict[str, Any]:
    import openai
    import yaml

    from llama_stack_provider_trl.demo import stack_server

    config = yaml.safe_load((REPO_ROOT / "ogx-run.yaml").read_text())
    config["providers"]["inference"][0]["config"].update(
        {
            "device": "cpu",
            "cpu_threads": threads,
            "models": {"bench": str(model_dir)},
            "max_batch_rows": max(clients, 1),
        }
    )
    home = workdir / "server"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ogx-run.yaml").write_text(yaml.safe_dump(config))
    found: dict[str, Any] = {}
    with stack_server.ogx_server(home / "ogx-run.yaml", home, Path(sys.prefix)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=600)
        stream_one(client, "bench", QUESTIONS[0], tokens)  # loads the model
        results = [stream_one(client, "bench", QUESTIONS[i % len(QUESTIONS)], tokens) for i in range(prompts)]
        generated, elapsed = sum(r[0] for r in results), sum(r[2] for r in results)
        found["server_1"] = {
            "tokens_per_s": generated / elapsed,
            "ttft_s": statistics.median(r[1] for r in results),
            "tokens": generated,
        }

        per_client: list[list[tuple[int, float, float]]] = [[] for _ in range(clients)]

        def run(index: int) -> None:
            for i in range(prompts):
                per_client[index].append(stream_one(client, "bench", QUESTIONS[(i + index) % len(QUESTIONS)], tokens))

        start = time.perf_counter()
        workers = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
        every = [r for rs in per_client for r in rs]
        found[f"server_{clients}"] = {
            "tokens_per_s": sum(r[0] for r in every) / wall,
            "ttft_s": statistics.median(r[1] for r in every),
            "tokens": sum(r[0] for r in every),
        }
        # OGX's log line of the generation process's report: "serving: model loaded ... mib=515.1 ..."
        log = (home / "server.log").read_text()
        found["loaded_mib"] = float(log.rsplit("mib=", 1)[1].split()[0]) if "serving: model loaded" in log else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=max(len(os.sched_getaffinity(0)), 1))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--raw", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw is not None:
        print("RESULT " + json.dumps(raw_generate(args.raw, args.prompts, args.tokens)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    model_dir = build_model(args.shape, workdir / f"model-{args.shape}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    raw = subprocess.run(
        [
            sys.executable,
            __file__,
            "--raw",
            str(model_dir),
            "--prompts",
            str(args.prompts),
            "--tokens",
            str(args.tokens),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    results = {"raw_generate": json.loads(raw.stdout.split("RESULT ", 1)[1])}
    results.update(server_arms(model_dir, workdir, args.prompts, args.tokens, args.clients, args.threads))
    print(f"serving: {args.shape} model, {args.prompts} prompts x {args.tokens} tokens, {args.threads} CPU threads")
    for arm, found in results.items():
        if arm != "loaded_mib":
            rate, ttft = found["tokens_per_s"], found["ttft_s"] * 1000
            print(f"{arm:>14}: {rate:8.1f} generated tokens/s, time to first token {ttft:7.1f} ms")
    print(f"loaded model: {results['loaded_mib']} MiB (the server's log: serving: model loaded)")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2))
    many, one, raw_rate = f"server_{args.clients}", results["server_1"]["tokens_per_s"], results["raw_generate"]
    print(f"{many}/server_1 tokens_per_s ratio: {results[many]['tokens_per_s'] / one:.3f}")
    print(f"server_1/raw_generate tokens_per_s ratio: {one / raw_rate['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
