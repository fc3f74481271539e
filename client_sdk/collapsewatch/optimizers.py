"""Which optimizer counts the steps: the one given to ``watch()``, or the torch optimizer
inside a wrapper.

Frameworks hand out wrappers: accelerate's ``AcceleratedOptimizer`` (what
``accelerator.prepare`` returns and Hugging Face's Trainer uses) subclasses
``torch.optim.Optimizer`` without its hook registries; Lightning's ``LightningOptimizer`` and
DeepSpeed's ZeRO optimizers hold the torch optimizer that does the update. Hooks go on that
inner optimizer (it steps only when the wrapper really updates: gradient accumulation and
skipped mixed-precision steps count as the framework counts them). An object with no torch
optimizer inside is refused before any hook is installed, with one message.
"""

from __future__ import annotations

from typing import Any

#: Attributes under which wrappers keep the optimizer they wrap, looked at in this order.
INNER = ("optimizer", "_optimizer", "optim")
_DEPTH = 4

REFUSED = (
    "collapsewatch: cannot count steps with {what}: it has no optimizer step hooks "
    "(register_step_pre_hook / register_step_post_hook) and wraps no torch.optim.Optimizer. "
    "Pass the torch optimizer inside it, or no optimizer and call monitor.step() after each "
    "training step"
)


def hookable(optimizer: Any) -> bool:
    """Whether ``optimizer`` takes torch's step hooks (its registries exist)."""
    return (
        callable(getattr(optimizer, "register_step_pre_hook", None))
        and callable(getattr(optimizer, "register_step_post_hook", None))
        and isinstance(getattr(optimizer, "_optimizer_step_pre_hooks", None), dict)
        and isinstance(getattr(optimizer, "_optimizer_step_post_hooks", None), dict)
    )


def step_optimizer(optimizer: Any) -> Any:
    """The optimizer whose hooks see each update; ``ValueError`` when there is none."""
    if optimizer is None:
        return None
    current = optimizer
    for _ in range(_DEPTH):
        if hookable(current):
            return current
        inner = next((getattr(current, a) for a in INNER if hasattr(current, a)), None)
        if inner is None or inner is current:
            break
        current = inner
    raise ValueError(REFUSED.format(what=type(optimizer).__name__))
