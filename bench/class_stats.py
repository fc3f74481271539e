"""What the neural-collapse statistics cost one sampled step, and what they weigh on the wire.

For each shape (feature width d, classes C, batch B) the reduction of ``ClassAccumulator`` runs
on random ReLU features with labels and logits, as the SDK runs it in the criterion hook: one
``add`` (sums, basis, nearest-class-mean check), then ``pack`` and the host copy of the record.
The first call of each shape is warm-up (and fills the lagged means); times are medians. The
payload is the gzipped request (``wire.encode``) of that one record (without run metadata).

    python bench/class_stats.py                      # d=512 C=10 B=256 and the other shapes
    python bench/class_stats.py --threads 2 --repeats 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from collapsewatch import wire
from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.neural_collapse import ClassAccumulator

#: (d, C, B, vocabulary or None): a small MLP head, the brief's case, a wide head, an LM head.
SHAPES = [(64, 5, 50, None), (512, 10, 256, None), (4096, 10, 256, None), (4096, 64, 512, 32000)]


def one_step(
    acc: ClassAccumulator, batch: tuple[torch.Tensor, ...], w: torch.Tensor, step: int
) -> Callable[[], list[dict[str, Any]]]:
    """The SDK's work for one sampled step: reduce, pack, copy to the host (the records are
    built in the sender thread, not timed)."""
    x, logits, y = batch
    with torch.no_grad():
        acc.add(x, logits, y, w, None, step)
        pack = StepPack()
        acc.pack(pack.record("head", "classes", step), pack)
        return pack.copy()


def bench(d: int, c: int, b: int, vocab: int | None, repeats: int) -> tuple[float, int, int]:
    """Median seconds per sampled step, JSON bytes and gzipped request bytes of its record.

    Two batches (features, logits, labels) are made once and alternate: the model's forward,
    which makes the logits, is not the SDK's cost.
    """
    torch.manual_seed(0)
    classes = vocab or c
    means = torch.randn(classes, d)
    w = torch.randn(classes, d) / d**0.5
    batches = []
    for _ in range(2):
        y = torch.randint(0, classes, (b,))
        x = torch.relu(means[y] + torch.randn(b, d))
        batches.append((x, x @ w.T, y))
    acc = ClassAccumulator(classes)
    times = []
    build = one_step(acc, batches[0], w, 0)  # warm-up; fills the lagged means
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        build = one_step(acc, batches[step % 2], w, step)
        times.append(time.perf_counter() - start)
    records = build()
    _, body = wire.encode({}, records, None)
    return statistics.median(times), len(json.dumps(records)), len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    head = ("d", "C", "batch", "vocab", "ms/step", "JSON KiB", "gzip KiB")
    print("{:>5} {:>4} {:>6} {:>6} {:>8} {:>9} {:>9}".format(*head))
    for d, c, b, vocab in SHAPES:
        seconds, raw, gz = bench(d, c, b, vocab, args.repeats)
        print(
            f"{d:>5} {min(c, vocab or c):>4} {b:>6} {vocab or '-':>6} {seconds * 1e3:>8.2f}"
            f" {raw / 1024:>9.1f} {gz / 1024:>9.1f}"
        )


if __name__ == "__main__":
    main()
