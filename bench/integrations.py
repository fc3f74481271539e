"""What each integration costs: the same script with and without collapsewatch. Prints a
table, asserts nothing.

Scripts (CPU, ``torch.set_num_threads`` fixed, each run after a warm-up run):

- ``plain loop``: the Lightning script's network and batches in a hand-written loop with
  ``watch()``: the SDK's own cost at that step time (the density floor of the sampler
  samples at least one step in 8 early in a run, whatever the step costs);
- ``lightning``: a Lightning module (an MLP on 64 features) trained by ``Trainer.fit``;
  with ``callbacks=[CollapsewatchCallback()]`` against without;
- ``transformers``: a tiny Llama built from a config, trained by Hugging Face's ``Trainer``;
  with ``callbacks=[CollapsewatchCallback()]`` against without;
- ``compiled``: a nanoGPT-like model under ``torch.compile`` (backend ``eager``: dynamo's
  graph capture without inductor's code generation, which this machine lacks a compiler
  for), a hand-written loop; watched against not. Also the time of a sampled step against an
  unsampled one, both watched: sampled steps run eagerly (the documented cost).

Sampling is the default (adaptive, about 3% of the training thread's time). The SDK sends to
an ``httpx.MockTransport`` that answers 202: the network and the server are not measured, the
SDK's own work is (statistics, host copies, the sender thread's encoding). The runs of one
script alternate with and without, ``--rounds`` times; the table gives the median wall time of
each and their ratio.

    python bench/integrations.py --quick
    python bench/integrations.py --rounds 5 --steps 300
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import torch
from torch import nn

import collapsewatch

logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")


def _client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(202, json={})))


def _options() -> dict[str, Any]:
    return {"server": "http://bench", "http_client": _client(), "project": "bench"}


# ------------------------------------------------------------------------------ Lightning


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def plain_run(steps: int, watched: bool) -> float:
    """The Lightning script's network and data in a hand-written loop: the SDK's own cost at
    this step time, to tell it from the callback's."""
    net = _mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    monitor = collapsewatch.watch(net, opt, **_options()) if watched else None
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(steps * 64, 64, generator=gen), torch.randint(0, 10, (steps * 64,))
    t0 = time.perf_counter()
    for i in range(steps):
        loss = nn.functional.cross_entropy(net(x[64 * i : 64 * i + 64]), y[64 * i : 64 * i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(loss=loss.detach())
    total = time.perf_counter() - t0
    if monitor is not None:
        monitor.finish()
    return total


def lightning_run(steps: int, watched: bool) -> float:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from collapsewatch.integrations.lightning import CollapsewatchCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(steps * 64, 64, generator=gen), torch.randint(0, 10, (steps * 64,))
    )
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            callbacks=[CollapsewatchCallback(**_options())] if watched else [],
        )
        t0 = time.perf_counter()
        trainer.fit(Module(), DataLoader(data, batch_size=64))
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------- Transformers


def transformers_run(steps: int, watched: bool) -> float:
    from torch.utils.data import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from collapsewatch.integrations.transformers import CollapsewatchCallback

    class Tokens(Dataset[dict[str, torch.Tensor]]):
        def __init__(self, n: int) -> None:
            self.ids = torch.randint(0, 256, (n, 64), generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=LlamaForCausalLM(config),
            args=TrainingArguments(
                output_dir=out,
                max_steps=steps,
                per_device_train_batch_size=8,
                logging_strategy="no",
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                disable_tqdm=True,
            ),
            train_dataset=Tokens(steps * 8),
            callbacks=[CollapsewatchCallback(**_options())] if watched else [],
        )
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0


# -------------------------------------------------------------------------------- compiled


def _gpt() -> nn.Module:
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.heads = heads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, c = x.shape
            q, k, v = (
                z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                for z in self.qkv(self.ln1(x)).split(c, dim=2)
            )
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(256, 128)
            self.h = nn.ModuleList([Block(128, 4) for _ in range(2)])
            self.head = nn.Linear(128, 256, bias=False)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.wte(idx)
            for block in self.h:
                x = block(x)
            return self.head(x)

    torch.manual_seed(0)
    return GPT()


def compiled_run(steps: int, watched: bool, split: dict[str, list[float]] | None = None) -> float:
    import torch._dynamo

    torch._dynamo.reset()
    model = _gpt()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    monitor = collapsewatch.watch(model, opt, **_options()) if watched else None
    step_fn = torch.compile(model, backend="eager")
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (8, 65), generator=gen) for _ in range(8)]
    t0 = time.perf_counter()
    for i in range(steps):
        idx = batches[i % len(batches)]
        sampled = monitor.sampled if monitor is not None else False
        s0 = time.perf_counter()
        logits = step_fn(idx[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if split is not None and i >= 4:  # after compilation
            split["sampled" if sampled else "unsampled"].append(time.perf_counter() - s0)
    total = time.perf_counter() - t0
    if monitor is not None:
        monitor.finish()
    return total


# ----------------------------------------------------------------------------------- table


def compare(name: str, run: Callable[[int, bool], float], steps: int, rounds: int) -> None:
    run(max(4, steps // 10), False)  # warm-up: imports, allocator, first compilation
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for watched in (r % 2 == 0, r % 2 == 1):
            times[watched].append(run(steps, watched))
    base, watched = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{name:<14} {steps:>6} {base:>10.2f} {watched:>10.2f} {watched / base:>8.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, 1 round")
    parser.add_argument("--only", choices=["plain loop", "lightning", "transformers", "compiled"])
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 40, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device cpu")
    print(f"{'script':<14} {'steps':>6} {'without s':>10} {'with s':>10} {'ratio':>8}")
    scripts: dict[str, Callable[[int, bool], float]] = {
        "plain loop": plain_run,
        "lightning": lightning_run,
        "transformers": transformers_run,
        "compiled": compiled_run,
    }
    for name, run in scripts.items():
        if args.only in (None, name):
            compare(name, run, args.steps, args.rounds)
    if args.only in (None, "compiled"):
        split: dict[str, list[float]] = {"sampled": [], "unsampled": []}
        compiled_run(args.steps, True, split)
        sampled, unsampled = (statistics.median(split[k]) for k in ("sampled", "unsampled"))
        print(
            f"compiled, watched: sampled step {sampled * 1e3:.1f} ms (eager), unsampled "
            f"{unsampled * 1e3:.1f} ms (compiled): x{sampled / unsampled:.2f} on "
            f"{len(split['sampled'])} of {len(split['sampled']) + len(split['unsampled'])} steps"
        )


if __name__ == "__main__":
    main()
