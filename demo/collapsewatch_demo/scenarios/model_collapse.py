"""Scenario ``model_collapse`` (family 11): a bigram LM retrained on its own samples.

Recipe (INDICATORS.md, family 11): a bigram language model over V = 200 tokens (a logits table,
``nn.Embedding(V + 1, V)``, row V being the start of a sequence), refit each generation on 400
sequences of 30 tokens, then sampled with top-p 0.9 to make the next generation's data. The
"real" data come from a fixed random bigram chain (made here): each token's successors follow
a Zipf law (exponent 1) over its own random order of the vocabulary. A generation trains from
scratch (zero logits, fresh Adam state, lr 0.1) for 150 full-batch steps of cross-entropy
against each context's next-token distribution in its data, then logs 400 top-p samples
(``log_tokens("samples", ids, generation=g)``) and the NLL of fixed real validation data
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
``torch._dynamo`` by the first optimizer of a process, 2-5 s); measured with
``train_self_consuming(..., seed=s)`` against a fake endpoint and the indicators computed from
what it sent, and with ``collapsewatch demo --scenario model_collapse`` against a server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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
STEPS = 150
LR = 0.1
DEMO_EVERY = 25
#: Fixes the real chain, the real training data and the validation data, for every run and seed.
TASK_SEED = 300
RUNS = ("self-trained-replace", "self-trained-keep-real")


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


def distinct_2(ids: torch.Tensor) -> float:
    """Exact distinct bigrams / bigrams of the samples (brute force, for the summary)."""
    pairs = ids[:, :-1] * V + ids[:, 1:]
    return pairs.unique().numel() / pairs.numel()


def train_self_consuming(
    *,
    keep_real: bool,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    generations: int = GENERATIONS,
    every: int | None = DEMO_EVERY,
    http_client: Any = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Generations of fitting the bigram LM and sampling its next training data, under
    collapsewatch; returns the summary (run id, exact distinct-2 and perplexity per generation).

    ``keep_real``: every generation trains on the real data plus the previous samples (the
    control); otherwise on the previous samples alone (the collapse)."""
    import collapsewatch

    started = time.perf_counter()
    chain = real_chain()
    real = generate(from_chain(chain), SAMPLES, torch.Generator().manual_seed(TASK_SEED + 1))
    val_ctx, val_next = bigrams(
        generate(from_chain(chain), VAL_SAMPLES, torch.Generator().manual_seed(TASK_SEED + 2))
    )
    model = nn.Embedding(V + 1, V)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    config = {
        "recipe": "self-consuming bigram LM",
        "data": "real + previous samples" if keep_real else "previous samples only",
        "vocab": V,
        "samples": f"{SAMPLES} x {LENGTH}",
        "top_p": TOP_P,
        "generations": generations,
        "steps_per_generation": STEPS,
        "lr": LR,
        "seed": seed,
    }
    monitor = collapsewatch.watch(
        model,
        optimizer=optimizer,
        criterion=criterion,
        project=project,
        run=run,
        server=server,
        token=token,
        every=every,
        config=config,
        http_client=http_client,
    )
    g = torch.Generator().manual_seed(seed)
    data = [real]
    d2: list[float] = []
    ppl: list[float] = []
    for generation in range(generations):
        with torch.no_grad():  # refit from scratch: uniform logits, fresh optimizer state
            model.weight.zero_()
        optimizer.state.clear()
        contexts, targets = next_token_targets(data)
        for _ in range(STEPS):
            loss = criterion(model(contexts), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            nll = nn.functional.cross_entropy(model(val_ctx), val_next, reduction="sum")
            monitor.log_eval("val", nll, val_next.numel())
            samples = generate(top_p(model.weight), SAMPLES, g)
            monitor.log_tokens("samples", samples, generation=generation)
        d2.append(distinct_2(samples))
        ppl.append(math.exp(nll.item() / val_next.numel()))
        data = [real, samples] if keep_real else [samples]
    monitor.finish()

    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "keep_real": keep_real,
        "seed": seed,
        "distinct_2": d2,
        "perplexity": ppl,
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    log(
        f"{run}: {'real + previous samples' if keep_real else 'previous samples only'}, "
        f"distinct-2 {d2[0]:.3f} -> {d2[-1]:.3f} (min/first {min(d2) / d2[0]:.2f}), "
        f"validation perplexity {ppl[0]:.1f} -> {ppl[-1]:.1f} (max/first "
        f"{max(ppl) / ppl[0]:.2f}) ({summary['seconds']:.1f}s, run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="model_collapse",
        family="diversity",
        summary="A bigram LM (V 200) refit each generation on its own top-p 0.9 samples: "
        "replacing the data, distinct-2 falls 0.37 -> 0.06 in 9 generations and validation "
        "perplexity x7; keeping half real data in the mix, distinct-2 holds 0.8 of its first "
        "value and perplexity +1.5%.",
        train=train_self_consuming,
        collapse={"keep_real": False},
        control={"keep_real": True},
        indicator="text_distinct_2",
        probe="samples",
        also_indicators=(("eval_perplexity", "val"),),
        runs=RUNS,
        fast=True,
    )
)
