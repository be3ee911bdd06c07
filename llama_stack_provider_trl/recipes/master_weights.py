"""fp32 master weights held by the optimizer, for a model whose weights are bf16.

The default full fine-tune holds fp32 weights and runs forward and backward under bf16 autocast, which casts
every weight and every linear's input on every call and keeps the residual stream in fp32. With
``master_weights: optimizer`` the model itself is bf16 (no casts, bf16 activations) and the optimizer keeps an
fp32 copy of each weight: each step it takes the bf16 gradients as fp32, updates the fp32 copies, and writes
them back rounded to bf16. Updates far smaller than bf16's resolution (lr 1e-6 on a weight of 1 is 1/8000 of
its last bit) still add up in the copies, where an optimizer stepping the bf16 weights directly would lose them.
"""

from typing import Any

import torch
from torch.optim import Optimizer
from transformers import Trainer

MASTER_WEIGHTS_KEY = "fp32_master_weights"


def with_fp32_master_weights(optimizer_cls: type[Optimizer]) -> type[Optimizer]:
    """A subclass of ``optimizer_cls`` that steps fp32 copies of the (half-precision) parameters it is given."""

    class Fp32MasterWeights(optimizer_cls):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
            groups = list(params)
            if groups and not isinstance(groups[0], dict):
                groups = [{"params": groups}]
            self.model_params: list[torch.Tensor] = []
            self.masters: list[torch.Tensor] = []
            master_groups = []
            for group in groups:
                model_params = list(group["params"])
                masters = [p.detach().to(torch.float32, copy=True) for p in model_params]
                self.model_params += model_params
                self.masters += masters
                master_groups.append({**group, "params": masters})
            super().__init__(master_groups, *args, **kwargs)

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            for param, master in zip(self.model_params, self.masters, strict=True):
                master.grad = None if param.grad is None else param.grad.to(torch.float32)
            loss = super().step(closure)
            for master in self.masters:
                master.grad = None  # an fp32 copy of every gradient is not kept between steps
            torch._foreach_copy_(self.model_params, self.masters)
            return loss

        def state_dict(self) -> dict[str, Any]:
            # The model's checkpoint holds the weights rounded to bf16; resuming needs the exact fp32 ones.
            return {**super().state_dict(), MASTER_WEIGHTS_KEY: [m.detach().clone() for m in self.masters]}

        @torch.no_grad()
        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            state_dict = dict(state_dict)
            saved = state_dict.pop(MASTER_WEIGHTS_KEY, None)
            super().load_state_dict(state_dict)
            if saved is not None:
                torch._foreach_copy_(self.masters, [s.to(m.device) for s, m in zip(saved, self.masters, strict=True)])
                torch._foreach_copy_(self.model_params, self.masters)

    Fp32MasterWeights.__name__ = Fp32MasterWeights.__qualname__ = f"{optimizer_cls.__name__}Fp32MasterWeights"
    return Fp32MasterWeights


def use_fp32_master_weights(trainer: Trainer) -> None:
    """Make ``trainer`` build the optimizer it would have built (its ``optimizer_cls_and_kwargs``, else
    ``args.optim``) over fp32 copies of the model's weights. Call before ``train()``."""
    cls, kwargs = trainer.optimizer_cls_and_kwargs or trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    trainer.optimizer_cls_and_kwargs = (with_fp32_master_weights(cls), kwargs)
