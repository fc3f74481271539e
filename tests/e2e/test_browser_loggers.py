"""The run page shows the families of attention and of the explicit loggers: a small
transformer trained through the two SDK lines plus every logger, into the real server, then
read in a real browser: a section per family, charts that draw, a line per logged name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import collapsewatch
from tests.e2e.browser import Tab, chart_ready, trace_names, wait_until
from tests.e2e.conftest import LiveServer

D, T, CLASSES, CODES, EXPERTS = 16, 12, 5, 8, 4
STEPS = 8
#: family -> (an indicator of it drawn on the page, the probe it is drawn for)
FAMILIES = {
    "attention": ("attention_entropy", "encoder.self_attn"),
    "codebook": ("codebook_perplexity_ratio", "quantizer"),
    "posterior": ("posterior_kl", "z"),
    "routing": ("moe_load_entropy", "moe"),
    "diversity": ("text_distinct_2", "predictions"),
    "generative": ("samples_diversity_ratio", "pooled"),
    "state": ("state_norm_ratio", "stream"),
}


class Kitchen(nn.Module):
    """A transformer layer whose pooled output feeds a codebook, a posterior, a router and a
    classifier: one real model that exercises every logger."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)
        self.codebook = nn.Parameter(torch.randn(CODES, D))
        self.posterior = nn.Linear(D, 8)
        self.router = nn.Linear(D, EXPERTS)
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encoder(x)
        pooled = h.mean(1)
        mu, logvar = self.posterior(pooled).chunk(2, dim=-1)
        return {
            "h": h,
            "pooled": pooled,
            "codes": torch.cdist(pooled, self.codebook).argmin(-1),
            "mu": mu,
            "logvar": logvar,
            "router": self.router(h.flatten(0, 1)),
            "logits": self.head(pooled),
        }


def train(server: str) -> str:
    torch.manual_seed(0)
    model = Kitchen()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = collapsewatch.watch(
        model, optimizer=optimizer, project="loggers", run="kitchen", server=server, every=1
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(32, T, D, generator=g)
        y = torch.randint(0, CLASSES, (32,), generator=g)
        out = model(x)
        kl = 0.5 * (out["mu"] ** 2 + out["logvar"].exp() - 1 - out["logvar"]).sum(-1).mean()
        loss = F.cross_entropy(out["logits"], y) + 0.1 * kl
        monitor.log_codes("quantizer", out["codes"], CODES)
        monitor.log_posterior("z", out["mu"], out["logvar"])
        monitor.log_routing("moe", out["router"], k=1)
        monitor.step(loss=loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # an evaluation after every step
            model.eval()
            out = model(x)
            model.train()
            monitor.log_tokens("predictions", out["logits"].argmax(-1).reshape(4, 8))
            monitor.log_eval("val", F.cross_entropy(out["logits"], y, reduction="sum"), 32)
            monitor.log_samples("pooled", out["pooled"], reference=x.mean(1))
            monitor.log_state("stream", out["h"], list(range(T)), train_length=T // 2)
    monitor.finish()
    return str(monitor.run_id)


def test_run_page_shows_the_logger_families(live_server: LiveServer, tab: Tab) -> None:
    run_id = train(live_server.url)
    page = tab.page
    page.goto(f"{live_server.url}/runs/{run_id}")
    nav = page.eval_on_selector_all(".family-nav a", "els => els.map(e => e.dataset.family)")
    assert set(FAMILIES) <= set(nav), nav
    for family, (indicator, probe) in FAMILIES.items():
        assert page.locator(f"#family-{family}").count() == 1, family
        dom_id = f"chart-{indicator}"
        page.locator(f"#{dom_id}-card").scroll_into_view_if_needed()
        wait_until(page, chart_ready(dom_id), 15_000)
        assert trace_names(page, dom_id) == [probe], (family, indicator)
        steps = page.evaluate(f"document.getElementById('{dom_id}').data[0].x.length")
        assert steps == STEPS, (indicator, steps)  # a point per sampled step
    assert tab.problems == [], f"browser errors: {tab.problems}"
