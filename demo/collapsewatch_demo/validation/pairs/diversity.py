"""Family 11, output diversity / model collapse: mechanisms unlike the scenario's (a bigram
logits table refit from scratch on its own top-p samples every generation).

The family's defaults are relative (distinct-2 down more than 30%, validation perplexity up
more than 10%, from the run's first logged point), so is the truth: the exact value on each
snapshot from the first logged step on, over its value there. Recipes log with the family's
loggers, ``monitor.log_tokens`` (samples) and ``monitor.log_eval`` (validation NLL). Values are
measured by ``harness.train`` without the SDK on one CPU thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from collapsewatch_demo import reference
from collapsewatch_demo.data import heldout_generator
from collapsewatch_demo.harness import Batch, Recipe, Setup
from collapsewatch_demo.validation.pairs.tokens import FlatTargets, TinyGPT
from collapsewatch_demo.validation.registry import Pair, register


class MarkovText:
    """Sequences of a random order-1 chain over ``vocab`` tokens whose successors follow a
    Zipf law (exponent 1.1) over each token's own random order of the vocabulary: a few
    frequent continuations and a long tail, what a model trained on its samples loses."""

    def __init__(self, vocab: int, task_seed: int) -> None:
        g = torch.Generator().manual_seed(task_seed)
        zipf = 1.0 / torch.arange(1, vocab + 1).double() ** 1.1
        order = torch.stack([torch.randperm(vocab, generator=g) for _ in range(vocab)])
        self.probs = torch.zeros(vocab, vocab, dtype=torch.float64).scatter_(
            1, order, zipf.expand(vocab, vocab)
        )
        self.probs = (self.probs / self.probs.sum(1, keepdim=True)).float()
        self.vocab, self.task_seed = vocab, task_seed

    def sample(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.randint(0, self.vocab, (n,), generator=generator)
        for t in range(1, length):
            x[:, t] = torch.multinomial(self.probs[x[:, t - 1]], 1, generator=generator)[:, 0]
        return x


class GRULanguageModel(nn.Module):
    """Embedding, one ``nn.GRU`` layer, a linear head over the vocabulary."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.embed(idx))[0]).flatten(0, 1)

    @torch.no_grad()
    def generate(
        self, first: torch.Tensor, length: int, temperature: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Sequences of ``length`` tokens from the first tokens ``first`` ``[n]``, each next
        token drawn from the softmax of the logits over ``temperature``."""
        out = [first]
        x, h = first, None
        for _ in range(length - 1):
            y, h = self.gru(self.embed(x[:, None]), h)
            probs = (self.head(y[:, 0]) / temperature).softmax(-1)
            x = torch.multinomial(probs, 1, generator=generator)[:, 0]
            out.append(x)
        return torch.stack(out, 1)


def nll(model: nn.Module, data: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL (nats) of sequences ``data`` and the number of tokens predicted."""
    with torch.no_grad():
        logits = model(data[:, :-1])
        total = F.cross_entropy(logits, data[:, 1:].flatten(), reduction="sum")
    return float(total), data[:, 1:].numel()


@dataclass(frozen=True)
class SelfTrainedGRU(Recipe):
    """A :class:`GRULanguageModel` (d = 48) of a Zipf Markov chain (V = 64, T = 24), Adam
    3e-3, batch 32, 1200 steps: 300 steps on fresh real sequences, then generations of 100
    steps, each starting with 512 samples of the model at temperature 0.8 (the same weights
    go on training). At each generation's start it logs 256 samples (``log_tokens``) and the
    NLL of 256 real validation sequences (``log_eval``). ``real``: the share of each batch
    drawn fresh from the chain, the rest from the generation's samples. With none (training
    on its own samples only) the tail goes first: distinct-2 of the samples falls to 0.66 of
    the first generation's by step 372 (crossing 0.7 at 324), 0.16 at 660 and 0.06 at the
    end (seed 0); on real data only it stays at 0.91-0.97. Mixing half real sequences in
    does not save it here: 0.53 at the end. About 17 s of CPU a run."""

    family: ClassVar[str] = "diversity"
    loggers: ClassVar[tuple[str, ...]] = ("log_tokens", "log_eval")
    real: float = 1.0
    steps: int = 1200
    pretrain: ClassVar[int] = 300
    generation: ClassVar[int] = 100
    data: ClassVar[MarkovText] = MarkovText(64, task_seed=981)
    length: ClassVar[int] = 24

    def _samples(self, model: nn.Module, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        first = torch.randint(0, self.data.vocab, (n,), generator=g)
        return model.generate(first, self.length, 0.8, g)  # type: ignore[operator]

    def build(self) -> Setup:
        model = GRULanguageModel(self.data.vocab, 48)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        validation = self.data.sample(256, self.length, heldout_generator(self.data.task_seed))
        return Setup(model, opt, FlatTargets(), validation)

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError("batches mix real sequences and samples (train_step)")

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        since = step - self.pretrain
        if since >= 0 and since % self.generation == 0:
            g = since // self.generation
            samples = self._samples(setup.model, 512, seed=g)
            self._log(setup, monitor, samples[:256], g)
            setup.parts["samples"] = samples
        fresh = 32 if "samples" not in setup.parts else round(self.real * 32)
        seq = self.data.sample(fresh, self.length, generator)
        if fresh < 32:
            samples = setup.parts["samples"]
            pick = torch.randint(0, len(samples), (32 - fresh,), generator=generator)
            seq = torch.cat((seq, samples[pick]))
        loss = setup.criterion(setup.model(seq[:, :-1]), seq[:, 1:])
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        setup.optimizer.step()
        if step + 1 == self.steps:
            last = self._samples(setup.model, 256, seed=10_000)
            self._log(setup, monitor, last, (step + 1 - self.pretrain) // self.generation)
        return float(loss.detach())

    def _log(self, setup: Setup, monitor: Any, samples: torch.Tensor, generation: int) -> None:
        monitor.log_tokens("samples", samples, generation=generation)
        monitor.log_eval("validation", *nll(setup.model, setup.heldout))

    def reference(self) -> reference.Reference:
        return reference.diversity_drop("samples", from_step=self.pretrain)

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        return {"samples": reference.distinct_2(self._samples(model, 256, seed=10_000))}


@dataclass(frozen=True)
class UnlearningGPT(Recipe):
    """A pre-LN :class:`TinyGPT` (2 blocks, d = 32) of a Zipf Markov chain (V = 80, T = 20),
    AdamW 2e-3, batch 32, 800 steps: trained on the chain for 320 steps, then asked to forget
    64 fixed sequences of it. From step 320 it logs the NLL of 256 real validation sequences
    every 20 steps (``log_eval``). ``ascent``: forget by gradient ascent on the forget set
    (the unlearning that Negative Preference Optimization calls catastrophic collapse);
    otherwise keep descending on the retained data. Ascent has the validation perplexity
    above 1.1 times its value at step 320 by step 336 and diverging (1e293 at the end; seed
    0); descent keeps it at 0.95-1.0 of it. About 12 s of CPU a run."""

    family: ClassVar[str] = "diversity"
    loggers: ClassVar[tuple[str, ...]] = ("log_eval",)
    ascent: bool = False
    steps: int = 800
    forget_from: ClassVar[int] = 320
    data: ClassVar[MarkovText] = MarkovText(80, task_seed=982)
    length: ClassVar[int] = 20

    def build(self) -> Setup:
        model = TinyGPT(self.data.vocab, self.length, 32, 2, 4)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        validation = self.data.sample(256, self.length + 1, heldout_generator(self.data.task_seed))
        forget = self.data.sample(64, self.length + 1, torch.Generator().manual_seed(982))
        return Setup(model, opt, FlatTargets(), validation, parts={"forget": forget})

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        seq = self.data.sample(32, self.length + 1, generator)
        return seq[:, :-1], seq[:, 1:]

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        if step >= self.forget_from and (step - self.forget_from) % 20 == 0:
            monitor.log_eval("validation", *nll(setup.model, setup.heldout))
        if step < self.forget_from or not self.ascent:
            loss = super().train_step(setup, step, generator, monitor)
        else:
            forget = setup.parts["forget"]
            seq = forget[torch.randint(0, len(forget), (32,), generator=generator)]
            loss_t = -setup.criterion(setup.model(seq[:, :-1]), seq[:, 1:])
            setup.optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            setup.optimizer.step()
            loss = float(loss_t.detach())
        if step + 1 == self.steps:
            monitor.log_eval("validation", *nll(setup.model, setup.heldout))
        return loss

    def reference(self) -> reference.Reference:
        return reference.perplexity_rise("validation", from_step=self.forget_from)

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        total, count = nll(model, heldout)
        return {"validation": math.exp(total / count)}


class CausalConvLM(nn.Module):
    """Embedding, two causal 1-D convolutions (kernel 3, dilations 1 and 2, ReLU, each with a
    skip connection) and a linear head over the vocabulary: a small WaveNet-style LM."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.conv1 = nn.Conv1d(dim, dim, 3, dilation=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, dilation=2)
        self.head = nn.Linear(dim, vocab)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """``[batch, T, vocab]``: the next-token logits after every prefix."""
        h = self.embed(idx).transpose(1, 2)  # [B, dim, T]
        h = h + F.relu(self.conv1(F.pad(h, (2, 0))))  # left padding keeps it causal
        h = h + F.relu(self.conv2(F.pad(h, (4, 0))))
        return self.head(h.transpose(1, 2))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits(idx).flatten(0, 1)

    @torch.no_grad()
    def generate(
        self, first: torch.Tensor, length: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Sequences of ``length`` tokens from the first tokens ``first`` ``[n]``, sampled
        from the softmax (temperature 1)."""
        x = first[:, None]
        for _ in range(length - 1):
            probs = self.logits(x[:, -7:])[:, -1].softmax(-1)  # the receptive field is 7
            x = torch.cat((x, torch.multinomial(probs, 1, generator=generator)), 1)
        return x


@dataclass(frozen=True)
class RewardTunedConvLM(Recipe):
    """A :class:`CausalConvLM` (d = 48) of a Zipf Markov chain (V = 48, T = 16), SGD 0.1 with
    momentum 0.9, 2000 steps: 500 steps of next-token prediction on the chain, then 1500 of
    policy-gradient fine-tuning at lr 0.05 (REINFORCE on the mean log-probability of a
    sample's tokens, a batch of 32 samples a step, the batch's mean reward as baseline)
    towards a reward, the share of a sample's tokens among 8 "liked" ones, with a penalty
    ``kl`` times the exact per-token KL divergence from the model as it was at step 500.
    From step 500 it logs 256 samples every 100 steps (``log_tokens``) and the NLL of 256
    real validation sequences (``log_eval``). Without the penalty the policy concentrates on
    a few high-reward continuations (the mode collapse of RL fine-tuning): liked tokens go
    from 14% to 94% of the samples, distinct-2 relative to step 500 crosses 0.7 at step 720
    and ends at 0.10 (seed 0). With it the samples stay near the pretrained model's (liked
    tokens 16%, distinct-2 at 0.99-1.01). About 150-190 s a run on the loaded shared
    machine (sampling 32 sequences token by token every step)."""

    family: ClassVar[str] = "diversity"
    loggers: ClassVar[tuple[str, ...]] = ("log_tokens", "log_eval")
    kl: float = 0.5
    steps: int = 2000
    pretrain: ClassVar[int] = 500
    every: ClassVar[int] = 100
    liked: ClassVar[int] = 8
    tune_lr: ClassVar[float] = 0.05
    data: ClassVar[MarkovText] = MarkovText(48, task_seed=983)
    length: ClassVar[int] = 16

    def _samples(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        first = torch.randint(0, self.data.vocab, (n,), generator=generator)
        return model.generate(first, self.length, generator)  # type: ignore[operator]

    def build(self) -> Setup:
        model = CausalConvLM(self.data.vocab, 48)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        validation = self.data.sample(256, self.length, heldout_generator(self.data.task_seed))
        # the KL anchor: a second build, loaded with the weights of step ``pretrain``
        anchor = CausalConvLM(self.data.vocab, 48).requires_grad_(False)
        return Setup(model, opt, FlatTargets(), validation, parts={"anchor": anchor})

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        seq = self.data.sample(32, self.length, generator)
        return seq[:, :-1], seq[:, 1:]

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        since = step - self.pretrain
        if since == 0:
            setup.parts["anchor"].load_state_dict(setup.model.state_dict())
            for group in setup.optimizer.param_groups:  # fine-tuning at half the rate
                group["lr"] = self.tune_lr
        if since >= 0 and since % self.every == 0:
            self._log(setup, monitor, self._samples(setup.model, 256, generator))
        if since < 0:
            loss = super().train_step(setup, step, generator, monitor)
        else:
            loss = self.optimise(setup, self._policy_loss(setup, generator))
        if step + 1 == self.steps:
            last = self._samples(setup.model, 256, torch.Generator().manual_seed(10_000))
            self._log(setup, monitor, last)
        return loss

    def _policy_loss(self, setup: Setup, generator: torch.Generator) -> torch.Tensor:
        """REINFORCE with the batch-mean baseline, plus ``kl`` times the mean per-token
        KL(policy || anchor) over the sampled prefixes."""
        seq = self._samples(setup.model, 32, generator)
        reward = (seq[:, 1:] < self.liked).float().mean(1)
        logits = setup.model.logits(seq[:, :-1])  # type: ignore[operator]
        logp = logits.log_softmax(-1)
        taken = logp.gather(-1, seq[:, 1:, None])[..., 0].mean(1)
        loss = -((reward - reward.mean()) * taken).mean()
        if self.kl > 0:
            with torch.no_grad():
                anchor = setup.parts["anchor"].logits(seq[:, :-1]).log_softmax(-1)
            kl = (logp.exp() * (logp - anchor)).sum(-1).mean()
            loss = loss + self.kl * kl
        return loss

    def _log(self, setup: Setup, monitor: Any, samples: torch.Tensor) -> None:
        monitor.log_tokens("samples", samples)
        monitor.log_eval("validation", *nll(setup.model, setup.heldout))

    def reference(self) -> reference.Reference:
        return reference.diversity_drop("samples", from_step=self.pretrain)

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float]:
        samples = self._samples(model, 256, torch.Generator().manual_seed(10_000))
        return {"samples": reference.distinct_2(samples)}


register(
    Pair(
        "diversity-gru-self-consuming",
        "GRU language model fine-tuned generation after generation on its own samples at "
        "temperature 0.8: distinct-2 collapses (control: real data only)",
        SelfTrainedGRU(real=0.0),
        SelfTrainedGRU(real=1.0),
    )
)
register(
    Pair(
        "diversity-gpt-unlearning-ascent",
        "nanoGPT-style LM unlearning 64 sequences by gradient ascent: validation perplexity "
        "explodes (control: keeps descending on retained data)",
        UnlearningGPT(ascent=True),
        UnlearningGPT(ascent=False),
    )
)
register(
    Pair(
        "diversity-convlm-reinforce-no-kl",
        "causal conv LM fine-tuned by REINFORCE towards 8 liked tokens with no KL penalty: "
        "its samples concentrate on a few continuations (control: KL penalty 0.5)",
        RewardTunedConvLM(kl=0.0),
        RewardTunedConvLM(kl=0.5),
    )
)
