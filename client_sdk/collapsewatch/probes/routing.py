"""Statistics of a mixture-of-experts router (the ``routing`` family of docs/indicators.md: routing
collapse), for ``log_routing``. An in-loop logger: reduced on sampled steps only (see
:mod:`collapsewatch.probes.explicit`).

Each call takes the router's logits ``[tokens, experts]`` (leading dims are tokens), sends each
token to its ``k`` largest logits, as a top-k router does, and adds up on the device
(``RoutingStat``): the choices each expert got, the router's softmax probabilities summed over
tokens, the sum of ``logsumexp(logits)^2`` (the router z-loss times tokens) and, given a
capacity, the choices over it. Sums only, so calls (micro-batches), steps and ranks merge by
addition. The server turns them into the load entropy, imbalance, dead experts, the auxiliary
loss and the z-loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from collapsewatch.pipeline.packing import StepPack


def _count(value: Any, what: str, low: int, high: int | None = None) -> int:
    """``value`` as a Python int in ``low..high``, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


class RoutingAccumulator:
    """One router's statistics over the calls of one sampled step (``RoutingStat``).

    Every call of a step must have the same number of experts and the same ``k``, and give a
    capacity on every call or on none, so that the sums describe one routing.
    """

    __slots__ = ("capped", "counts", "dropped", "experts", "k", "prob_sum", "tokens", "z_sum")

    def __init__(self) -> None:
        self.experts = 0  # 0 until the first call
        self.k = 0
        self.capped = False
        self.tokens = 0  # a shape, known on the host: no sync
        self.counts: torch.Tensor | None = None  # [E] int64
        self.prob_sum: torch.Tensor | None = None  # [E]
        self.z_sum: torch.Tensor | None = None  # scalar
        self.dropped: torch.Tensor | None = None  # scalar int64, with a capacity

    def add(self, router_logits: Any, k: Any = 1, capacity: Any = None) -> None:
        """Add one call: ``router_logits`` ``[..., experts]``, ``k`` experts a token, and the
        most tokens an expert takes (``capacity``, per call) or None. Call under no_grad."""
        import torch

        if not isinstance(router_logits, torch.Tensor):
            raise TypeError(f"router_logits must be a tensor, not {type(router_logits).__name__}")
        if router_logits.dim() < 2:
            shape = tuple(router_logits.shape)
            raise ValueError(f"router_logits must be [tokens, experts], got shape {shape}")
        if not router_logits.is_floating_point():
            raise TypeError(f"router_logits must be floating point, not {router_logits.dtype}")
        experts = router_logits.shape[-1]
        if experts < 2:
            raise ValueError(f"a router needs at least 2 experts, got {experts}")
        k = _count(k, "k", 1, experts)
        if capacity is not None:
            capacity = _count(capacity, "capacity", 1)
        if self.experts and (experts, k) != (self.experts, self.k):
            raise ValueError(
                f"{experts} experts with k={k}, but this step's earlier calls had "
                f"{self.experts} experts with k={self.k}"
            )
        if self.experts and (capacity is not None) != self.capped:
            raise ValueError("give a capacity on every call of a step or on none")

        given = router_logits.detach().reshape(-1, experts)
        tokens = given.shape[0]
        # the choice on the logits as the model has them: in half precision ties are common,
        # and torch.topk breaks them as the model's own top-k does
        chosen = given.topk(k, dim=1).indices.reshape(-1)
        logits = given if given.dtype in (torch.float32, torch.float64) else given.float()
        lse = torch.logsumexp(logits, dim=1)  # [tokens]
        prob_sum = torch.exp(logits - lse[:, None]).sum(0)  # softmax, reusing the logsumexp
        z_sum = (lse * lse).sum()
        counts = torch.zeros(experts, dtype=torch.int64, device=logits.device)
        counts.index_add_(0, chosen, torch.ones_like(chosen))
        dropped = None
        if capacity is not None:
            # the capacity holds per call (per routed batch): choices past it are dropped
            dropped = (counts - capacity).clamp_min(0).sum()

        # everything computed: update the state (a failed call above leaves no trace)
        if self.counts is None or self.prob_sum is None or self.z_sum is None:
            self.counts, self.prob_sum, self.z_sum, self.dropped = counts, prob_sum, z_sum, dropped
        else:
            device = self.counts.device
            self.counts = self.counts + counts.to(device)
            self.prob_sum = self.prob_sum + prob_sum.to(device, self.prob_sum.dtype)
            self.z_sum = self.z_sum + z_sum.to(device, self.z_sum.dtype)
            if dropped is not None and self.dropped is not None:
                self.dropped = self.dropped + dropped.to(device)
        self.experts, self.k, self.capped = experts, k, capacity is not None
        self.tokens += tokens

    def pack(self, stats: dict[str, Any], pack: StepPack) -> None:
        """File the step's ``RoutingStat`` values into a record."""
        assert self.counts is not None and self.prob_sum is not None and self.z_sum is not None
        stats["experts"] = float(self.experts)
        stats["k"] = float(self.k)
        stats["tokens"] = float(self.tokens)
        pack.put(stats, "counts", self.counts)
        pack.put(stats, "prob_sum", self.prob_sum)
        pack.put(stats, "z_sum", self.z_sum)
        if self.dropped is not None:
            pack.put(stats, "dropped", self.dropped)
