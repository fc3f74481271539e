"""Which collapse families a run is watched for, and what to add for the others.

Said once, at the end of the run's first sampled step (when the function calls of a forward
have been seen), on stderr (unless ``COLLAPSEWATCH_QUIET=1``), and sent with the run so its
page says it too. Keys are the families of the server's indicator catalogue.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from collapsewatch.probes.activation_functions import SaturationProbe
from collapsewatch.probes.activations import ActivationProbe
from collapsewatch.probes.attention import AttentionProbe
from collapsewatch.probes.functions import FunctionProbe
from collapsewatch.probes.tokens import TokenProbe
from collapsewatch.schemas import FamilyCoverage, ProbeInfo, ProbeKind

if TYPE_CHECKING:
    from collapsewatch.probes.base import Probe

ENV_QUIET = "COLLAPSEWATCH_QUIET"

#: A family's name in the summary line.
TITLES = {
    "dead_units": "dead units",
    "dimensional": "dimensional collapse",
    "complete": "complete collapse",
    "neural_collapse": "neural collapse",
    "tokens": "token uniformity",
    "attention": "attention entropy",
    "codebook": "VQ codebook",
    "posterior": "posterior collapse",
    "routing": "expert routing",
    "sparsity": "sparsity",
    "diversity": "output diversity",
    "generative": "generative mode collapse",
    "state": "long-context state",
}
#: What to add for a family no hook can see, and the probe kinds that mean it is watched.
_LOGGED = {
    "codebook": ((ProbeKind.codes,), "call monitor.log_codes(name, indices, num_codes)"),
    "posterior": ((ProbeKind.posterior,), "call monitor.log_posterior(name, mu, logvar)"),
    "routing": ((ProbeKind.routing,), "call monitor.log_routing(name, router_logits)"),
    "diversity": (
        (ProbeKind.text, ProbeKind.eval),
        "call monitor.log_tokens(name, token_ids) / monitor.log_eval(name, nll_sum, tokens) "
        "in evaluations",
    ),
    "generative": ((ProbeKind.samples,), "call monitor.log_samples(name, samples, reference)"),
    "state": ((ProbeKind.state,), "call monitor.log_state(name, hidden, positions)"),
}

#: By family: whether it is watched, and what is watched or what to add.
Coverage = dict[str, FamilyCoverage]


def coverage(probes: Iterable[Probe], infos: Iterable[ProbeInfo]) -> Coverage:
    """Each family: whether the run is watched for it, with the what or the what-to-add."""
    probes = [p for p in probes if not p.disabled]
    infos = list(infos)
    kinds = {i.kind for i in infos}
    layers = [p for p in probes if isinstance(p, ActivationProbe)]
    functions = [p for p in probes if isinstance(p, FunctionProbe)]
    relus = sum(p.relu_follows for p in layers) + sum(len(f.relu_sites) for f in functions)
    saturating = sum(isinstance(p, SaturationProbe) for p in probes)
    blocks = sum(isinstance(p, TokenProbe) for p in probes)
    attention = sum(isinstance(p, AttentionProbe) for p in probes) + sum(
        len(f.attention_sites) for f in functions
    )
    weights = sum(1 for i in infos if i.kind == ProbeKind.parameter and i.name != "(global)")
    out: dict[str, tuple[bool, str]] = {
        "dead_units": (
            (True, f"{relus} layers before a ReLU, {saturating} Tanh/Sigmoid")
            if relus or saturating
            else (False, "no ReLU, Tanh or Sigmoid seen: dead units are counted before ReLUs")
        ),
        "dimensional": _count(len(layers), "layers", "no Linear, Conv or recurrent layer found"),
        "complete": _count(len(layers), "layers", "no Linear, Conv or recurrent layer found"),
        "neural_collapse": (
            (True, "classifier " + next(i.name for i in infos if i.kind == ProbeKind.classes))
            if ProbeKind.classes in kinds
            else (
                False,
                "no classifier seen feeding a classification loss with integer labels: pass "
                "watch(..., criterion=nn.CrossEntropyLoss()) or classifier=... with "
                "monitor.step(labels=...)",
            )
        ),
        "tokens": _count(
            blocks, "blocks", "no transformer blocks found: pass watch(..., blocks=[...])"
        ),
        "attention": _count(
            attention,
            "attention layers",
            "no attention seen: call monitor.log_attention(name, probs) in your attention",
        ),
        "sparsity": _count(weights, "weights", "no trainable weights"),
    }
    for family, (logged_kinds, hint) in _LOGGED.items():
        logged = [i.name for i in infos if i.kind in logged_kinds]
        out[family] = (True, "logged: " + ", ".join(logged)) if logged else (False, hint)
    return {
        family: FamilyCoverage(watched=out[family][0], detail=out[family][1][:500])
        for family in TITLES
    }


def _count(n: int, what: str, otherwise: str) -> tuple[bool, str]:
    return (True, f"{n} {what}") if n else (False, otherwise)


def describe(run: str, cov: Coverage) -> str:
    """The summary lines: what is watched, then what is not and what to add."""
    watched = [f"{TITLES[f]} ({c.detail})" for f, c in cov.items() if c.watched]
    missing = [f"  - {TITLES[f]}: {c.detail}" for f, c in cov.items() if not c.watched]
    lines = [f"collapsewatch: run {run} watched for " + (", ".join(watched) or "nothing yet")]
    if missing:
        lines += ["collapsewatch: not watched:", *missing]
    return "\n".join(lines)


def say(message: str) -> None:
    """Print a line for the user, on stderr, unless ``COLLAPSEWATCH_QUIET=1``."""
    if os.environ.get(ENV_QUIET, "").strip().lower() in ("", "0", "false", "no", "off"):
        print(message, file=sys.stderr, flush=True)
