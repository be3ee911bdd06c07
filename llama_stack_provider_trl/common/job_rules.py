"""Rules the server checks when a request comes in, where it can, and the training process checks again once it
knows what the server could not (the precision ``auto`` resolves to on its device, a Hub model's tokenizer): each
worded once, here."""


def master_weights_problem(master_weights: str, precision: str) -> str | None:
    """Why fp32 master weights cannot live where ``master_weights`` asks for a job in ``precision``; None: they can."""
    if master_weights == "optimizer" and precision == "fp16":
        return (
            "optimizer needs bf16 (fp16 weights would need loss scaling) and this job runs in fp16; ask for "
            "training_config.dtype bf16 on a device that has it, or master_weights: model"
        )
    return None


def no_chat_template(model: str, strings: str) -> str:
    """The refusal of conversational rows for a tokenizer without a chat template; ``strings``: the rows' other form."""
    return (
        f"the rows are conversational (lists of messages) but the tokenizer of '{model}' has no chat template to "
        f"render them; give rows as {strings}, or a model whose tokenizer has a chat template"
    )
