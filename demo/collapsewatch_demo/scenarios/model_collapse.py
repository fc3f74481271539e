"""Scenario ``model_collapse`` (the ``diversity`` family): a bigram LM retrained on its own samples.

Recipe (the ``diversity`` family of docs/indicators.md): a bigram language model over V = 200
tokens (a logits table, ``nn.Embedding(V + 1, V)``, row V being the start of a sequence), refit
each generation on 400 sequences of 30 tokens, then sampled with top-p 0.9 to make the next
generation's data. The "real" data come from a fixed random bigram chain (made here): each
token's successors follow a Zipf law (exponent 1) over its own random order of the vocabulary. A
generation trains from scratch (zero logits, fresh Adam state, lr 0.1) for 150 full-batch steps
of cross-entropy against each context's next-token distribution in its data, then logs 400 top-p
samples (``log_tokens("samples", ids, generation=g)``) and the NLL of fixed real validation data
(``log_eval("val", ...)``, 400 x 30 tokens of the chain). Generations 0-9.

- Collapse: each generation trains on the previous one's samples only (the data are
  replaced). Top-p cuts the rare continuations and the next fit cannot bring them back:
  distinct-2 falls 0.36-0.37 -> 0.25 -> 0.18 -> ... -> 0.056-0.058 (generations 0, 1, 2, 9),
  validation perplexity 351 -> 2260-2470 (x6.4-7.0), seeds 0-4. Both relative defaults fire
  at generation 2 (distinct-2 at 0.68 and 0.49 of generation 0; two points past the limit).
- Control: each generation trains on the real data plus the previous generation's samples,
  in equal parts. distinct-2 settles at 0.29-0.31 (lowest 0.79-0.82 of generation 0 as the
  server estimates it, 0.795-0.812 exact), perplexity within 1.5% of its first value (max
  x1.011-1.015), seeds 0-4: no alert of the diversity family.

Accumulating the data instead (real + every generation's samples, as in "Is Model Collapse
Inevitable?") slows the loss but does not stop it under top-p 0.9: distinct-2 reaches 0.63-0.64
of generation 0 by generation 9 and perplexity +8-9% (seeds 0-2), so the 30% default fires on
it too. Truncated sampling drops about a tenth of the model's mass every round; the real data
must keep a fixed share of the mix to bound what is lost, so the control keeps half.

The validation perplexity (351 at generation 0, where the chain itself has 63) is that of a
40,000-logit table fit to 12,000 bigrams: unseen bigrams get little mass. Each run takes 3-6 s
on one thread of the shared 2-core machine, the SDK included (plus the one-time import of
``torch._dynamo`` by the first optimizer of a process, 2-5 s); measured against a
fake endpoint with the indicators computed from what it sent, and with ``collapsewatch demo
--scenario model_collapse`` against a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from collapsewatch_demo.harness import Recipe, Setup
from collapsewatch_demo.scenarios.registry import Scenario, register

V = 200
#: Row V of the logits table is the context of the first token of a sequence.
BOS = V
SAMPLES = 400
LENGTH = 30
VAL_SAMPLES = 400
TOP_P = 0.9
ZIPF = 1.0
GENERATIONS = 10
#: Full-batch steps of one generation's fit.
STEPS = 150
#: Fixes the real chain, the real training data and the validation data, for every run and seed.
TASK_SEED = 300


def real_chain() -> torch.Tensor:
    """``[V + 1, V]`` next-token probabilities of the "real" language (row BOS: first tokens)."""
    g = torch.Generator().manual_seed(TASK_SEED)
    zipf = torch.arange(1, V + 1, dtype=torch.float64) ** -ZIPF
    zipf /= zipf.sum()
    table = torch.empty(V + 1, V, dtype=torch.float64)
    for row in range(V + 1):
        table[row, torch.randperm(V, generator=g)] = zipf
    return table


def generate(
    next_token: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    n: int,
    g: torch.Generator,
) -> torch.Tensor:
    """``[n, LENGTH]`` sequences drawn token by token from ``next_token(previous, g)``."""
    out = torch.empty(n, LENGTH, dtype=torch.int64)
    prev = torch.full((n,), BOS, dtype=torch.int64)
    for t in range(LENGTH):
        prev = next_token(prev, g)
        out[:, t] = prev
    return out


def categorical(weights: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One index per row of ``weights`` (non-negative, any scale), by inverting the CDF at a
    uniform draw: several times faster than ``torch.multinomial`` on these small rows."""
    cdf = weights.cumsum(-1)
    u = torch.rand(weights.shape[0], 1, generator=g, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=weights.shape[-1] - 1)


def from_chain(table: torch.Tensor) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda prev, g: categorical(table[prev], g)


def top_p(logits: torch.Tensor, p: float = TOP_P) -> Callable[..., torch.Tensor]:
    """Nucleus sampling from a logits table: the smallest set of most likely tokens whose
    probability reaches ``p``, renormalised."""

    def next_token(prev: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        probs, order = logits[prev].softmax(-1).sort(-1, descending=True)
        keep = probs.cumsum(-1) - probs < p  # the mass before a token is under p
        return order.gather(1, categorical(probs * keep, g)[:, None]).squeeze(1)

    return next_token


def bigrams(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, next token) pairs of sequences, the first token's context being BOS."""
    full = torch.cat([torch.full((data.shape[0], 1), BOS), data], 1)
    return full[:, :-1].reshape(-1), full[:, 1:].reshape(-1)


def next_token_targets(data: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The contexts seen in ``data`` (equal parts: each part's counts are normalised to
    its size, so real and synthetic data weigh alike) and their next-token distributions."""
    counts = torch.zeros(V + 1, V)
    for part in data:
        ctx, nxt = bigrams(part)
        counts.index_put_((ctx, nxt), torch.full((ctx.numel(),), 1.0 / ctx.numel()), True)
    seen = counts.sum(1) > 0
    return torch.arange(V + 1)[seen], counts[seen] / counts[seen].sum(1, keepdim=True)


@dataclass(frozen=True)
class SelfConsumingBigrams(Recipe):
    """A bigram LM refit from scratch each generation (``STEPS`` steps of Adam 0.1) on the
    previous generation's top-p samples, with the real data in equal part when ``keep_real``
    (the control), then evaluated (``log_eval``) and sampled (``log_tokens``)."""

    family: ClassVar[str] = "diversity"
    loggers: ClassVar[tuple[str, ...]] = ("log_eval", "log_tokens")
    keep_real: bool = True
    steps: int = GENERATIONS * STEPS

    def build(self) -> Setup:
        chain = real_chain()
        real = generate(from_chain(chain), SAMPLES, torch.Generator().manual_seed(TASK_SEED + 1))
        val = generate(from_chain(chain), VAL_SAMPLES, torch.Generator().manual_seed(TASK_SEED + 2))
        val_ctx, val_next = bigrams(val)
        model = nn.Embedding(V + 1, V)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        parts = {"real": real, "data": [real], "val_next": val_next}
        return Setup(model, opt, nn.CrossEntropyLoss(), val_ctx, parts=parts)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        generation, inner = divmod(step, STEPS)
        model, parts = setup.model, setup.parts
        assert isinstance(model, nn.Embedding)
        if inner == 0:  # refit from scratch: uniform logits, fresh optimizer state
            with torch.no_grad():
                model.weight.zero_()
            setup.optimizer.state.clear()
            parts["contexts"], parts["targets"] = next_token_targets(parts["data"])
        loss = self.optimise(setup, setup.criterion(model(parts["contexts"]), parts["targets"]))
        if inner == STEPS - 1:
            with torch.no_grad():
                nll = nn.functional.cross_entropy(
                    model(setup.heldout), parts["val_next"], reduction="sum"
                )
                monitor.log_eval("val", nll, parts["val_next"].numel())
                samples = generate(top_p(model.weight), SAMPLES, generator)
                monitor.log_tokens("samples", samples, generation=generation)
            parts["data"] = [parts["real"], samples] if self.keep_real else [samples]
        return loss


register(
    Scenario(
        name="model_collapse",
        summary="A bigram LM (V 200) refit each generation on its own top-p 0.9 samples: "
        "replacing the data, distinct-2 falls 0.37 -> 0.06 in 9 generations and validation "
        "perplexity x7; keeping half real data in the mix, distinct-2 holds 0.8 of its first "
        "value and perplexity +1.5%.",
        collapse=SelfConsumingBigrams(keep_real=False),
        control=SelfConsumingBigrams(keep_real=True),
        indicator="text_distinct_2",
        probe="samples",
        also_indicators=(("eval_perplexity", "val"),),
        runs=("self-trained-replace", "self-trained-keep-real"),
        every=25,
        fast=True,
    )
)
