"""Llama Stack's LoRA module names onto the model's own, read from its weight files in the server (no torch).

``LoraFinetuningConfig.lora_attn_modules`` uses torchtune's names: ``q_proj``, ``k_proj``, ``v_proj`` and
``output_proj``. Models name these layers differently (Llama's attention output is ``o_proj``, others use
``out_proj`` or ``dense``), so each name is looked up among the attention projections the model really has.
``apply_lora_to_mlp`` adds every linear layer of the MLP blocks; ``apply_lora_to_output`` the LM head.
The layer names come from the safetensors headers (a JSON header before the tensors: nothing is loaded).
"""

import json
import struct
from pathlib import Path

from llama_stack_provider_trl.common.checkpoints import ADAPTER_CONFIG_FILE
from llama_stack_provider_trl.engine.model_files import local_file

TORCHTUNE_ATTENTION_NAMES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q_proj", "query", "q"),
    "k_proj": ("k_proj", "key", "k"),
    "v_proj": ("v_proj", "value", "v"),
    "output_proj": ("o_proj", "out_proj", "dense", "wo"),
}
_ATTENTION_PARENTS = ("attn", "attention")
_MLP_PARENTS = ("mlp", "feed_forward", "ffn")
_OUTPUT_HEADS = ("lm_head", "output")
# When the weights are not on this machine, Llama's names (Llama, Qwen2, Mistral, SmolLM... share them)
_DEFAULT_ATTENTION = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
_DEFAULT_MLP = ("gate_proj", "up_proj", "down_proj")


class UnknownLoraModule(ValueError):
    """A requested name matches no layer of the model; the message names it and what the model has."""


def _header_tensors(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a safetensors file's header."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def linear_layers(model: str) -> set[str] | None:
    """The dotted names of the model's linear layers (2-D ``.weight`` tensors), or None when its safetensors files
    are not on this machine. An adapter checkpoint answers for the base model it is merged into."""
    adapter = local_file(model, ADAPTER_CONFIG_FILE)
    if adapter is not None:
        try:
            model = json.loads(adapter.read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError):
            return None
    index = local_file(model, "model.safetensors.index.json")
    try:
        if index is not None:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [local_file(model, shard) for shard in shards]
        else:
            files = [local_file(model, "model.safetensors")]
        if any(f is None for f in files):
            return None
        tensors: dict[str, list[int]] = {}
        for f in files:
            assert f is not None
            tensors.update(_header_tensors(f))
    except (OSError, ValueError, KeyError, struct.error):
        return None
    layers = {name.removesuffix(".weight") for name, shape in tensors.items() if name.endswith(".weight")}
    layers = {name for name in layers if len(tensors[f"{name}.weight"]) == 2 and "embed" not in name}
    if _ties_embeddings(model):
        layers.add("lm_head")  # tied to the embedding: no tensor of its own, but a linear module all the same
    return layers


def _ties_embeddings(model: str) -> bool:
    config = local_file(model, "config.json")
    try:
        return bool(config and json.loads(config.read_text()).get("tie_word_embeddings", False))
    except (OSError, ValueError):
        return False


def _leaves(layers: set[str], parents: tuple[str, ...]) -> set[str]:
    """Last name parts of the layers under a module whose name contains one of ``parents``."""
    found = set()
    for layer in layers:
        *path, leaf = layer.split(".")
        if any(parent in part for part in path for parent in parents):
            found.add(leaf)
    return found


def lora_target_modules(model: str, attention: list[str], mlp: bool, output: bool) -> list[str]:
    """peft ``target_modules`` for these Llama Stack LoRA settings. Raises UnknownLoraModule, naming the name, for a
    name that is neither a torchtune name nor a layer of the model, or one the model has no layer for."""
    layers = linear_layers(model)
    targets: list[str] = []
    attention_leaves = _leaves(layers, _ATTENTION_PARENTS) if layers is not None else None
    for name in attention:
        if attention_leaves is None:
            real = _DEFAULT_ATTENTION.get(name, name)
        else:
            candidates = TORCHTUNE_ATTENTION_NAMES.get(name, (name,))
            real = next((c for c in candidates if c in attention_leaves), None)
            if real is None:
                raise UnknownLoraModule(
                    f"'{name}' matches no attention layer of '{model}' (its attention layers: "
                    f"{sorted(attention_leaves)}); use {sorted(TORCHTUNE_ATTENTION_NAMES)} or those names"
                )
        targets.append(real)
    if mlp:
        mlp_leaves = sorted(_leaves(layers, _MLP_PARENTS)) if layers is not None else list(_DEFAULT_MLP)
        if not mlp_leaves:
            raise UnknownLoraModule(f"apply_lora_to_mlp: '{model}' has no linear layers in MLP blocks")
        targets.extend(mlp_leaves)
    if output:
        head = next((h for h in _OUTPUT_HEADS if layers is None or h in layers), None)
        if head is None:
            raise UnknownLoraModule(f"apply_lora_to_output: '{model}' has no output layer named {list(_OUTPUT_HEADS)}")
        targets.append(head)
    if not targets:
        raise UnknownLoraModule(
            "lora_attn_modules is empty and no MLP or output layers are asked for: nothing to adapt"
        )
    return list(dict.fromkeys(targets))
