"""A Hugging Face Trainer script with only the callback added: a tiny Llama built from a config
(no download) trains on the CPU, streams to the real app with the families of a hand-written
loop (attention through SDPA, token statistics of its decoder layers, token-level neural
collapse on the LM head), stops and saves on a critical alert, and resumes into the same run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import collapsewatch
from collapsewatch.integrations.transformers import RUN_FILE, CollapsewatchCallback
from tests.e2e.integration_support import (
    SERVER,
    always_critical,
    indicators,
    steps_of,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)

VOCAB, LENGTH = 48, 16


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


class Tokens(Dataset[dict[str, torch.Tensor]]):
    """Sequences of a repeating pattern plus noise: something for the model to learn."""

    def __init__(self, n: int = 256) -> None:
        gen = torch.Generator().manual_seed(1)
        start = torch.randint(0, VOCAB, (n, 1), generator=gen)
        self.ids = (start + torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Pause(TrainerCallback):
    """A slower step, so that an alert can arrive while training still runs."""

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.01)


def arguments(out: Path, **kwargs: Any) -> TrainingArguments:
    defaults: dict[str, Any] = {
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "logging_strategy": "no",
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    return TrainingArguments(output_dir=str(out), **(defaults | kwargs))


def test_the_callback_alone_gets_the_families_of_a_hand_written_loop(
    inproc: Any, tmp_path: Path
) -> None:
    callback = CollapsewatchCallback(
        project="hf", run="trainer", every=2, server=SERVER, http_client=inproc
    )
    Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=8),
        train_dataset=Tokens(),
        callbacks=[callback],
    ).train()
    run_id = str(callback.run_id)
    run = inproc.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["last_step"]) == ("finished", 7)

    model = tiny_llama()  # the same model, by hand, with what the callback finds given
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    monitor = collapsewatch.watch(
        model,
        opt,
        classifier=model.lm_head,
        blocks=list(model.model.layers),
        project="hf",
        run="by-hand",
        every=2,
        server=SERVER,
        http_client=inproc,
    )
    data = Tokens()
    for step in range(8):
        batch = data.ids[8 * step : 8 * step + 8]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(loss=loss.detach())
    monitor.finish()
    found = indicators(inproc, run_id)
    # minority collapse exists only where a record's token counts are imbalanced enough,
    # which depends on the batches each loop drew
    conditional = {"minority_collapse"}
    assert found - conditional == indicators(inproc, str(monitor.run_id)) - conditional
    assert {"loss", "attention_entropy", "effective_rank", "nc1", "grad_norm"} <= found
    assert any(name.startswith("token") for name in found), found
    series = inproc.get(f"/api/v1/runs/{run_id}/series").json()
    assert {"nc1", "lm_head"} in [{s["indicator"], s["probe"]} for s in series], "the LM head"
    assert steps_of(inproc, run_id, "loss", "loss") == [0, 2, 4, 6, 7]


def test_gradient_accumulation_counts_the_trainers_steps(inproc: Any, tmp_path: Path) -> None:
    callback = CollapsewatchCallback(project="hf", every=1, server=SERVER, http_client=inproc)
    Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=3, gradient_accumulation_steps=2),
        train_dataset=Tokens(),
        callbacks=[callback],
    ).train()
    assert steps_of(inproc, str(callback.run_id), "grad_norm", "model.norm.weight") == [0, 1, 2]


def test_a_critical_alert_stops_training_and_saves(inproc: Any, tmp_path: Path) -> None:
    always_critical(inproc, "hf-stop")
    callback = CollapsewatchCallback(
        project="hf-stop",
        every=1,
        stop_on="critical",
        checkpoint_on="critical",
        server=SERVER,
        http_client=inproc,
    )
    trainer = Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=2000),
        train_dataset=Tokens(20_000),
        callbacks=[callback, Pause()],
    )
    trainer.train()
    assert trainer.state.global_step < 2000, "the alert stopped training"
    saved = list(tmp_path.glob("checkpoint-*"))
    assert len(saved) == 1, saved


def test_a_resumed_trainer_continues_the_same_run(inproc: Any, tmp_path: Path) -> None:
    first = CollapsewatchCallback(project="hf", every=2, server=SERVER, http_client=inproc)
    Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=6, save_strategy="steps", save_steps=6),
        train_dataset=Tokens(),
        callbacks=[first],
    ).train()
    run_id = str(first.run_id)
    assert (tmp_path / RUN_FILE).exists() and (tmp_path / "checkpoint-6").exists()

    again = CollapsewatchCallback(project="hf", every=2, server=SERVER, http_client=inproc)
    Trainer(
        model=tiny_llama(),
        args=arguments(tmp_path, max_steps=10),
        train_dataset=Tokens(),
        callbacks=[again],
    ).train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))
    assert again.run_id == run_id
    # each part's last step has the parameters as they ended (the Trainer has zeroed the
    # gradients by then: weight norms only)
    assert steps_of(inproc, run_id, "weight_norm", "model.norm.weight") == [0, 2, 4, 5, 6, 8, 9]
    assert inproc.get(f"/api/v1/runs/{run_id}").json()["config"]["collapsewatch.resumed"] == [6]
