"""What collapsewatch costs a training step: prints a table, asserts nothing.

For each model, four copies train side by side: without the SDK ("baseline"), watched with
``every=1`` (every optimizer step sampled), the same without the statistics of the collapse
families added after the walking skeleton ("every=1 lean": no token statistics of transformer
blocks, no Tanh/Sigmoid saturation, no weight sparsity and NaN/Inf counts), and watched with
the default adaptive sampling. The transformer's two ``nn.TransformerEncoderLayer`` blocks get
token statistics; every model's weights get sparsity statistics at most once every 32 steps.
The configurations alternate step blocks within each round (the order rotates from round to
round), so machine noise hits all of them alike. A step is forward + backward + optimizer step
on a fixed batch, after warm-up, with ``torch.set_num_threads`` fixed.

The SDK sends to an ``httpx.Client`` over an ``httpx.MockTransport`` that answers 202: no server
runs and the network is not measured, but the SDK's own work (statistics on sampled steps, the
host copy, the background thread's JSON encoding and gzip) is. "every=1 no-attn" is "every=1"
without the attention statistics of the transformer's ``nn.MultiheadAttention`` layers (the
probabilities recomputed for a sample of queries, and sigma(W_Q W_K^T)): the difference to
"every=1" is their cost.

Then the explicit loggers (``monitor.log_*``): the time of one call, median of repeated calls
on realistic tensors, on a sampled step and, for the training-loop loggers, on an unsampled
one (which should cost next to nothing).

    python bench/sdk_overhead.py --quick          # a smoke run, a few seconds per model
    python bench/sdk_overhead.py --threads 2 --rounds 7
    python bench/sdk_overhead.py --only-widths --widths 1024,4096   # the width part alone

Then the width: three ``Linear(w, w)`` layers (ReLU between, batch 256, SGD) at each width of
``--widths``, baseline and ``every=1`` alternating, each step timed. Printed per width: the
baseline's median step, the median extra a sampled step costs (and that over the baseline),
and the median extra of the steps that carry the weight-sparsity snapshot (here every fifth
step): the SDK's cost should grow no faster than the model's own step.

Then the payload: bytes per sampled step of the MLP, and per record of one 4096-wide Linear
layer (its activation record and its weight's record with the sparsity statistics), gzipped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import torch
from torch import nn

import collapsewatch

CONFIGS: dict[str, dict[str, int | None] | None] = {
    "baseline": None,
    "every=1": {"every": 1},
    "every=1 no-attn": {"every": 1},
    "every=1 lean": {"every": 1},
    "default": {"every": None},
}
#: Width of the layer whose records are weighed for the payload (the issue's budget: 300 KB).
WIDE = 4096
#: The width and payload parts take the sparsity snapshot every this many steps (the SDK's
#: default is every 32 at the most), so that a short run has several to time and weigh.
SNAPSHOT_EVERY = 5


def lean(monitor: collapsewatch.Monitor) -> None:
    """Turn off the statistics added for the collapse families (tokens, saturation, attention,
    sparsity), leaving the walking skeleton's: the difference to "every=1" is their cost."""
    from collapsewatch.probes.activation_functions import SaturationProbe
    from collapsewatch.probes.attention import AttentionProbe
    from collapsewatch.probes.tokens import TokenProbe

    for probe in monitor._probes:
        if isinstance(probe, TokenProbe | SaturationProbe | AttentionProbe):
            probe.disabled = True
    monitor._params.sparsity.min_steps = 10**9
    monitor._params.sparsity._last = 0


def no_attention(monitor: collapsewatch.Monitor) -> None:
    """Turn off the attention statistics only."""
    from collapsewatch.probes.attention import AttentionProbe

    for probe in monitor._probes:
        if isinstance(probe, AttentionProbe):
            probe.disabled = True


class Capture:
    """An httpx transport that answers 202 and keeps the request bodies (read after timing)."""

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, bool]] = []
        self._lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        gzipped = request.headers.get("content-encoding", "") == "gzip"
        with self._lock:
            self.bodies.append((request.content, gzipped))
        return httpx.Response(202, json={"records": 0})

    def summary(self) -> dict[str, int]:
        """Requests, bytes on the wire, bytes before gzip, and distinct sampled steps."""
        wire = raw = 0
        steps: set[int] = set()
        for body, gzipped in self.bodies:
            plain = gzip.decompress(body) if gzipped else body
            wire += len(body)
            raw += len(plain)
            records = json.loads(plain).get("records", [])
            steps.update(r["step"] for r in records if r.get("kind") == "activation")
        return {"requests": len(self.bodies), "wire": wire, "raw": raw, "steps": len(steps)}


@dataclass
class Trainee:
    """One copy of a model under one configuration, with its step times."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    monitor: collapsewatch.Monitor | None = None
    capture: Capture | None = None
    times: list[float] = field(default_factory=list)


def mlp() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, torch.Tensor, torch.Tensor]:
    """6 x Linear(512, 512) with ReLU between them, batch 256, SGD, MSE regression."""
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(512, 512)] + ([nn.ReLU()] if i < 5 else [])
    model = nn.Sequential(*layers)
    x, y = torch.randn(256, 512), torch.randn(256, 512)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3), nn.MSELoss(), x, y


class Encoder(nn.Module):
    """2-layer nn.TransformerEncoder (d_model 256, 4 heads, ff 1024), mean-pooled, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(256, 4, dim_feedforward=1024, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def transformer() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, torch.Tensor, torch.Tensor]:
    """Seq 64, batch 32, Adam 1e-4, cross-entropy on random labels (so labels reach the SDK)."""
    model = Encoder()
    x, y = torch.randn(32, 64, 256), torch.randint(0, 10, (32,))
    return model, torch.optim.Adam(model.parameters(), lr=1e-4), nn.CrossEntropyLoss(), x, y


MODELS: dict[str, Callable[[], tuple]] = {"mlp 6x512": mlp, "transformer 2x256": transformer}


def train_step(t: Trainee, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    t.optimizer.zero_grad(set_to_none=True)
    t.criterion(t.model(x), y).backward()
    t.optimizer.step()
    return time.perf_counter() - start


def bench_model(name: str, build: Callable[[], tuple], args: argparse.Namespace, spool: str):
    trainees: list[Trainee] = []
    for config, options in CONFIGS.items():
        torch.manual_seed(0)  # the same weights and batch (x, y) in every configuration
        model, optimizer, criterion, x, y = build()
        t = Trainee(config, model, optimizer, criterion)
        if options is not None:
            t.capture = Capture()
            client = httpx.Client(transport=httpx.MockTransport(t.capture.handler))
            t.monitor = collapsewatch.watch(
                model,
                optimizer=optimizer,
                criterion=criterion,
                project="bench",
                run=f"{name.split()[0]}-{config.replace('=', '').replace(' ', '-')}",
                server="http://bench.invalid",
                http_client=client,
                spool_dir=spool,
                **options,
            )
            if config.endswith("lean"):
                lean(t.monitor)
            elif config.endswith("no-attn"):
                no_attention(t.monitor)
        trainees.append(t)

    for t in trainees:
        for _ in range(args.warmup):
            train_step(t, x, y)
    for r in range(args.rounds):
        shift = r % len(trainees)
        for t in trainees[shift:] + trainees[:shift]:
            t.times += [train_step(t, x, y) for _ in range(args.steps)]

    for t in trainees:
        if t.monitor is not None:
            t.monitor.finish()
    return trainees


def report(name: str, trainees: list[Trainee], total_steps: int) -> None:
    base = trainees[0]
    base_median = statistics.median(base.times)
    base_mean = statistics.fmean(base.times)
    for t in trainees:
        median = statistics.median(t.times)
        mean = statistics.fmean(t.times)
        sampled = "-"
        if t.capture is not None:
            every = t.monitor.stats["every"]  # the adaptive interval where it ended
            sampled = f"{t.capture.summary()['steps']}/{total_steps}, every {every}"
        print(
            f"{name:<18} {t.name:<16} {median * 1e3:>9.2f} {median / base_median:>6.3f}"
            f" {mean * 1e3:>9.2f} {mean / base_mean:>6.3f}  {sampled}"
        )


def payload(args: argparse.Namespace, spool: str) -> None:
    """Bytes per sampled step of the MLP with every=1, as captured from the mock transport."""
    torch.manual_seed(0)
    model, optimizer, criterion, x, y = mlp()
    capture = Capture()
    client = httpx.Client(transport=httpx.MockTransport(capture.handler))
    monitor = collapsewatch.watch(
        model, optimizer=optimizer, criterion=criterion, project="bench", run="mlp-payload",
        server="http://bench.invalid", http_client=client, spool_dir=spool, every=1,
    )  # fmt: skip
    t = Trainee("payload", model, optimizer, criterion, monitor)
    for _ in range(args.payload_steps):
        train_step(t, x, y)
    monitor.finish()
    s = capture.summary()
    steps = max(s["steps"], 1)
    print(
        f"\nMLP payload, every=1, {args.payload_steps} steps -> {s['steps']} sampled steps in"
        f" {s['requests']} requests: {s['raw'] / steps:,.0f} B raw, {s['wire'] / steps:,.0f} B"
        f" gzip per sampled step (run metadata, sent with every batch, included)"
    )


def wide_payload(args: argparse.Namespace, spool: str) -> None:
    """Gzipped bytes of each record of one WIDE x WIDE Linear layer per sampled step: the
    layer's activation record (every sampled step) and its weight's parameter record (with the
    sparsity statistics, here on one sampled step in five), each gzipped alone, and the whole
    request per sampled step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDE, WIDE), nn.ReLU())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    capture = Capture()
    client = httpx.Client(transport=httpx.MockTransport(capture.handler))
    monitor = collapsewatch.watch(
        model, optimizer=optimizer, criterion=nn.MSELoss(), project="bench", run="wide",
        server="http://bench.invalid", http_client=client, spool_dir=spool, every=1,
    )  # fmt: skip
    monitor._params.sparsity.min_steps = SNAPSHOT_EVERY
    x, y = torch.randn(256, WIDE), torch.randn(256, WIDE)
    t = Trainee("wide", model, optimizer, nn.MSELoss(), monitor)
    for _ in range(args.payload_steps):
        train_step(t, x, y)
    monitor.finish()
    sizes: dict[str, list[int]] = {}
    for body, gzipped in capture.bodies:
        plain = gzip.decompress(body) if gzipped else body
        for record in json.loads(plain).get("records", []):
            key = f"{record['kind']} {record['probe']}"
            if record["kind"] == "parameter" and "nonzero" in record["stats"]:
                key += " + sparsity"
            sizes.setdefault(key, []).append(len(gzip.compress(json.dumps(record).encode())))
    s = capture.summary()
    print(
        f"\nLinear({WIDE}, {WIDE}), every=1, {args.payload_steps} steps: "
        f"{s['wire'] / max(s['steps'], 1):,.0f} B gzip per sampled step in all (requests of"
        " several steps, run metadata included); per record, gzipped alone:"
    )
    for key, values in sorted(sizes.items()):
        print(f"  {key:<36} {statistics.median(values):>9,.0f} B  ({len(values)} records)")


def three_linear(width: int) -> nn.Module:
    """Three ``Linear(width, width)`` with ReLU between them."""
    return nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, width),
    )  # fmt: skip


def widths(args: argparse.Namespace, spool: str) -> None:
    """How a sampled step's cost grows with the width, against the model's own step."""
    print(
        f"\n3 x Linear(w, w), batch 256, every=1 vs baseline, {args.width_steps} steps x"
        f" {args.width_rounds} rounds each (median ms; 'sparsity' = the sampled steps that also"
        f" take the weight-sparsity snapshot, here one in {SNAPSHOT_EVERY})"
    )
    print(
        f"{'width':>6} {'baseline':>9} {'extra':>8} {'ratio':>6}"
        f" {'sparsity extra':>15} {'ratio':>6}"
    )
    for width in args.widths:
        trainees = []
        for watched in (False, True):
            torch.manual_seed(0)
            model = three_linear(width)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
            t = Trainee("every=1" if watched else "baseline", model, optimizer, nn.MSELoss())
            if watched:
                client = httpx.Client(transport=httpx.MockTransport(Capture().handler))
                t.monitor = collapsewatch.watch(
                    model, optimizer=optimizer, criterion=t.criterion, project="bench",
                    run=f"width-{width}", server="http://bench.invalid", http_client=client,
                    spool_dir=spool, every=1,
                )  # fmt: skip
                t.monitor._params.sparsity.min_steps = SNAPSHOT_EVERY
            trainees.append(t)
        x, y = torch.randn(256, width), torch.randn(256, width)
        for t in trainees:
            for _ in range(2):
                train_step(t, x, y)  # warm-up; the watched copy's sampled steps 0 and 1
        for r in range(args.width_rounds):
            for t in trainees[r % 2 :] + trainees[: r % 2]:
                t.times += [train_step(t, x, y) for _ in range(args.width_steps)]
        base, watched = trainees
        assert watched.monitor is not None
        watched.monitor.finish()
        # the watched copy's step n (from 0) takes the snapshot when n % SNAPSHOT_EVERY == 0;
        # timed steps start at sampled step 2 (after the warm-up) and run in blocks per round
        snapshot = [t for i, t in enumerate(watched.times) if (i + 2) % SNAPSHOT_EVERY == 0]
        plain = [t for i, t in enumerate(watched.times) if (i + 2) % SNAPSHOT_EVERY != 0]
        step = statistics.median(base.times)
        extra = statistics.median(plain) - step
        snap = statistics.median(snapshot) - step if snapshot else float("nan")
        print(
            f"{width:>6} {step * 1e3:>9.1f} {extra * 1e3:>8.1f} {extra / step:>6.3f}"
            f" {snap * 1e3:>15.1f} {snap / step:>6.3f}"
        )


def logger_calls() -> dict[str, tuple[Callable[[collapsewatch.Monitor], None], bool]]:
    """One call per explicit logger on realistic tensors, and whether it is a training-loop
    logger (reduced on sampled steps only)."""
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(16, 8, 256, 256, generator=g).softmax(-1)
    codes = torch.randint(0, 1024, (256, 64), generator=g)
    mu, logvar = torch.randn(256, 64, generator=g), torch.randn(256, 64, generator=g) * 0.1
    router = torch.randn(4096, 64, generator=g)
    ids = torch.randint(0, 32_000, (64, 256), generator=g)
    nll = torch.tensor(1234.5)
    fake, real = torch.randn(512, 784, generator=g), torch.randn(512, 784, generator=g)
    states, positions = torch.randn(16, 11, 512, generator=g), [2**i - 1 for i in range(11)]
    return {
        "log_attention [16,8,256,256]": (lambda m: m.log_attention("attn", probs), True),
        "log_codes [256,64] K=1024": (lambda m: m.log_codes("codes", codes, 1024), True),
        "log_posterior [256,64]": (lambda m: m.log_posterior("z", mu, logvar), True),
        "log_routing [4096,64] k=2": (lambda m: m.log_routing("moe", router, k=2), True),
        "log_tokens [64,256]": (lambda m: m.log_tokens("text", ids, generation=0), False),
        "log_eval": (lambda m: m.log_eval("val", nll, 4096), False),
        "log_samples [512,784]+ref": (lambda m: m.log_samples("gen", fake, real), False),
        "log_state [16,11,512]": (lambda m: m.log_state("rnn", states, positions), False),
    }


def loggers(args: argparse.Namespace, spool: str) -> None:
    """Median time of one call of each explicit logger, sampled and unsampled."""
    print(f"\n{'explicit logger, one call':<30} {'sampled ms':>10} {'unsampled ms':>13}")
    for name, (call, in_loop) in logger_calls().items():
        timings: dict[bool, list[float]] = {True: [], False: []}
        for sampled in (True, False) if in_loop else (True,):
            client = httpx.Client(transport=httpx.MockTransport(Capture().handler))
            monitor = collapsewatch.watch(
                nn.Linear(2, 2), project="bench", run="loggers", server="http://bench.invalid",
                http_client=client, spool_dir=spool, every=1 if sampled else 10**6,
            )  # fmt: skip
            monitor.step()  # step 0 is always sampled; from step 1 on only with every=1
            for _ in range(args.logger_calls):
                start = time.perf_counter()
                call(monitor)
                timings[sampled].append(time.perf_counter() - start)
                monitor.step()  # ends the step: the records are filed and handed over
            monitor.finish()
        unsampled = f"{statistics.median(timings[False]) * 1e3:>13.4f}" if in_loop else " " * 13
        print(f"{name:<30} {statistics.median(timings[True]) * 1e3:>10.3f} {unsampled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of alternating blocks")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--payload-steps", type=int, default=20)
    parser.add_argument("--logger-calls", type=int, default=20, help="timed calls per logger")
    parser.add_argument(
        "--widths",
        type=lambda text: [int(w) for w in text.split(",") if w],
        default=[512, 1024, 2048, 4096],
        help="widths of the 3 x Linear(w, w) part, comma-separated ('' skips it)",
    )
    parser.add_argument("--width-steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--width-rounds", type=int, default=3, help="alternating blocks")
    parser.add_argument("--only-widths", action="store_true", help="the width part alone")
    parser.add_argument("--quick", action="store_true", help="steps 5, rounds 2, warmup 3")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.warmup, args.payload_steps = 5, 2, 3, 10
        args.logger_calls = 5
        args.widths, args.width_steps, args.width_rounds = [256, 1024], 5, 2
    os.environ.setdefault("COLLAPSEWATCH_QUIET", "1")  # no coverage summary per watched copy

    torch.set_num_threads(args.threads)
    total = args.warmup + args.rounds * args.steps
    print(
        f"torch {torch.__version__}, collapsewatch {getattr(collapsewatch, '__version__', '?')},"
        f" {args.threads} torch thread(s); {args.rounds} rounds x {args.steps} steps per"
        f" configuration after {args.warmup} warm-up steps"
    )
    print(
        "The SDK sends to an httpx.MockTransport answering 202: no server, network not measured"
        " (statistics, host copy, JSON and gzip in the sender thread are).\n"
    )
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as spool:
        if not args.only_widths:
            print(
                f"{'model':<18} {'config':<16} {'median ms':>9} {'ratio':>6}"
                f" {'mean ms':>9} {'ratio':>6}  sampled steps"
            )
            print("  (median: of single steps; mean: of all timed steps, so sampled steps count)")
            for name, build in MODELS.items():
                report(name, bench_model(name, build, args, spool), total)
        widths(args, spool)
        if not args.only_widths:
            payload(args, spool)
            wide_payload(args, spool)
            loggers(args, spool)


if __name__ == "__main__":
    main()
