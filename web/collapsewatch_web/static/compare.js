// The compare page: one indicator on one layer, a line per run, from GET /api/v1/compare.
// Choices live in the URL, so a comparison can be shared.
"use strict";

(function () {
  const { el, fetchJSON, plot } = window.cw;

  function initComparePage(data) {
    const chart = document.getElementById("compare-chart");
    const indicator = document.getElementById("compare-indicator");
    const probe = document.getElementById("compare-probe");
    const add = document.getElementById("compare-add");
    const note = document.getElementById("compare-note");

    function go(runs) {
      const query = new URLSearchParams({ runs: runs.join(",") });
      if (indicator) query.set("indicator", indicator.value);
      if (probe) query.set("probe", probe.value);
      window.location.assign("/compare?" + query);
    }

    async function draw() {
      if (!chart || !indicator || !probe.value) return;
      const query = new URLSearchParams({
        runs: data.runs.join(","), indicator: indicator.value, probe: probe.value,
      });
      history.replaceState(null, "", "/compare?" + query);
      try {
        const body = await fetchJSON("/api/v1/compare?" + query);
        if (!chart.data) chart.replaceChildren();
        await plot(chart, body.figure);
        const missing = data.runs.length - body.series.length;
        note.textContent = missing > 0
          ? missing + " of the runs " + (missing === 1 ? "has" : "have") + " no " + probe.value + " for this indicator."
          : "";
      } catch (err) {
        note.textContent = err.message;
      }
    }

    if (indicator) {
      indicator.addEventListener("change", () => {
        const probes = data.options[indicator.value] || [];
        const keep = probes.includes(probe.value) ? probe.value : probes[0];
        probe.replaceChildren(...probes.map((p) => el("option", { text: p, selected: p === keep })));
        draw();
      });
      probe.addEventListener("change", draw);
    }
    if (add) add.addEventListener("change", () => { if (add.value) go(data.runs.concat([add.value])); });
    for (const button of document.querySelectorAll(".remove-run")) {
      button.addEventListener("click", () => go(data.runs.filter((r) => r !== button.dataset.runId)));
    }
    draw();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("cw-compare-data");
    if (data) initComparePage(JSON.parse(data.textContent));
  });
})();
