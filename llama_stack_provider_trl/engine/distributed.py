"""How many processes train one job, with which strategy, and which combinations a strategy refuses.

Decided at request time, so a job that cannot run is a 400 naming the field, not a failed launch: no more processes
than the machine has GPUs (CUDA) or usable cores (CPU), nor than the operator's max_num_processes. The processes
themselves are started by accelerate (engine/launch.py); this module only reads the machine and the model files. On
Ray the cluster's size is the Ray driver's to check, at launch (recipes/ray_launch.py).
"""

from llama_stack_provider_trl.common.job_spec import DistributedStrategy, LoraSpec
from llama_stack_provider_trl.config import TrlPostTrainingConfig
from llama_stack_provider_trl.engine.cpu_threads import usable_cores
from llama_stack_provider_trl.engine.devices import cuda_device_count, cuda_total_memory
from llama_stack_provider_trl.engine.errors import RequestError
from llama_stack_provider_trl.engine.job_request import Given
from llama_stack_provider_trl.engine.model_files import weight_bytes, weight_dtype_bytes

# Bytes per parameter of a full fine-tune with AdamW: fp32 weights, fp32 gradients, two fp32 moments
FULL_FINETUNE_BYTES_PER_PARAM = 16
# What activations, the CUDA context and allocator fragmentation leave of a GPU for the states above
USABLE_MEMORY_SHARE = 0.8


def resolve_num_processes(config: TrlPostTrainingConfig, device: str, batch: Given[int], overrides: str) -> int:
    """The job's processes: auto is one per visible GPU; several need a device they can share the job on.
    ``config`` has the job's overrides applied; ``overrides`` is the caller's name for them."""
    field = f"{overrides}.num_processes"
    requested = config.num_processes
    if config.executor == "ray":  # the cluster's size is known to the job's Ray driver, which checks it at launch
        if requested == "auto":
            raise RequestError(field, "executor ray: give the number of Ray workers as an integer")
        _check_operator_cap(field, requested, config.max_num_processes)
        return _split(batch, requested)
    if requested == "auto":
        requested = cuda_device_count() if device == "cuda" else 1
        requested = max(requested, 1)
    _check_operator_cap(field, requested, config.max_num_processes)
    if requested == 1:
        return 1
    if device == "mps":
        raise RequestError(field, "MPS runs one process; set num_processes: 1")
    if device.startswith("cuda:"):
        raise RequestError(
            field,
            f"the server trains on one pinned GPU ({device}); set device: cuda in the provider config to spread a "
            "job over several GPUs, or num_processes: 1",
        )
    if device == "cuda" and requested > cuda_device_count():
        raise RequestError(field, f"{requested} processes need {requested} GPUs; {cuda_device_count()} are visible")
    if device == "cpu" and requested > usable_cores():
        raise RequestError(
            field,
            f"{requested} CPU processes on a server with {usable_cores()} usable cores; give at most {usable_cores()}",
        )
    return _split(batch, requested)


def _check_operator_cap(field: str, requested: int, cap: int | None) -> None:
    if cap is not None and requested > cap:
        raise RequestError(
            field, f"{requested} processes; this server starts at most {cap} for one job (max_num_processes)"
        )


def _split(batch: Given[int], processes: int) -> int:
    if batch.value % processes:
        raise RequestError(
            batch.field,
            f"the global batch {batch.value} does not split evenly over {processes} processes; give a multiple of "
            f"{processes}",
        )
    return processes


def resolve_strategy(
    config: TrlPostTrainingConfig, device: str, num_processes: int, model: str, overrides: str
) -> DistributedStrategy:
    field = f"{overrides}.distributed_strategy"
    if config.distributed_strategy == "ddp":
        return "ddp"
    if config.distributed_strategy == "fsdp2":  # asked for by name: also on one GPU (accelerate's FSDP2 wrapping)
        if config.executor == "ray":
            raise RequestError(field, "executor ray runs ddp; use ddp or auto")
        if not device.startswith("cuda"):
            raise RequestError(
                field,
                f"fsdp2 runs on CUDA GPUs only (accelerate enables FSDP there), this server trains on {device}; "
                "use ddp",
            )
        return "fsdp2"
    if num_processes == 1:
        return "ddp"
    local_gpu = device == "cuda" and config.executor == "local"
    return "fsdp2" if local_gpu and not config.use_lora and not _fits_one_gpu(model) else "ddp"


def _fits_one_gpu(model: str) -> bool:
    """Whether a full fine-tune's states and a frozen reference fit one GPU; True when either size is unknown."""
    stored, memory = weight_bytes(model), cuda_total_memory()
    if stored is None or memory is None:
        return True
    parameters = stored // weight_dtype_bytes(model)
    needed = parameters * (FULL_FINETUNE_BYTES_PER_PARAM + 2)  # + a bf16 reference copy
    return needed <= memory * USABLE_MEMORY_SHARE


def check_strategy_combination(
    strategy: DistributedStrategy,
    *,
    lora: LoraSpec | None,
    padding_free: bool | str,
    torch_compile: bool,
    master_weights: str,
    overrides: str,
) -> None:
    """Refuse what TRL/peft or this provider's own levers do not run under FSDP2 (DDP runs everything)."""
    if strategy != "fsdp2":
        return
    refused = {
        "qlora": lora is not None and lora.quantize_4bit,  # 4-bit weights do not shard under FSDP2
        "merge_adapter": lora is not None and lora.merge_adapter,  # merging needs the whole model on one rank
        "padding_free": padding_free is True,  # packs the attention of an unsharded model
        "torch_compile": torch_compile,
        "master_weights": master_weights == "optimizer",  # FSDP2 keeps its own fp32 shards
    }
    for name, refuse in refused.items():
        if refuse:
            raise RequestError(
                f"{overrides}.{name}",
                "is not supported with distributed_strategy fsdp2; turn it off, or use distributed_strategy: ddp",
            )
