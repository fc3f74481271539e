// The runs page: the table refreshes itself from GET /api/v1/overview (runs with their health
// per family, in two queries for the whole list); ticked runs open /compare.
"use strict";

(function () {
  const { el, setBadge, formatTime, fetchJSON } = window.cw;
  const REFRESH_MS = 5000;

  // The markup of the run_health macro in _macros.html.
  function healthCell(families) {
    if (!families.length) return el("span", { class: "muted", text: "all clear" });
    return el("ul", { class: "chips mini" }, ...families.map((f) => {
      let title = f.title + ": " + f.state;
      if (f.firing) title += ", " + f.firing + " firing";
      if (f.pending) title += ", " + f.pending + " pending";
      const mark = f.firing ? String(f.firing) : f.pending ? "…" : "✓";
      return el("li", { class: "chip state-" + f.state, title }, f.title,
        el("span", { class: "chip-state", text: mark }));
    }));
  }

  function initRunsPage(table) {
    const query = new URLSearchParams();
    if (table.dataset.project) query.set("project", table.dataset.project);
    if (table.dataset.q) query.set("q", table.dataset.q);
    if (table.dataset.tag) query.set("tag", table.dataset.tag);
    const url = "/api/v1/overview?" + query;
    const body = table.tBodies[0];
    const template = document.getElementById("run-row");
    const compareForm = document.getElementById("compare-form");
    const compareButton = document.getElementById("compare-button");

    function newRow(run) {
      const row = template.content.firstElementChild.cloneNode(true);
      row.dataset.runId = run.run_id;
      const pick = row.querySelector(".pick");
      pick.value = run.run_id;
      pick.setAttribute("aria-label", "Compare " + run.name);
      const projectLink = row.querySelector("a.project");
      projectLink.href = "/?project=" + encodeURIComponent(run.project);
      projectLink.textContent = run.project;
      const name = row.querySelector("a.run-name");
      name.href = "/runs/" + encodeURIComponent(run.run_id);
      name.textContent = run.name;
      const time = row.querySelector("time");
      time.dateTime = run.started_at;
      time.textContent = formatTime(run.started_at);
      row.querySelector(".tags").replaceChildren(...run.tags.flatMap((t) =>
        [" ", el("a", { class: "tag", href: "/?tag=" + encodeURIComponent(t), text: t })]));
      return row;
    }

    async function refresh() {
      if (document.hidden) return;
      let runs;
      try {
        runs = await fetchJSON(url);
      } catch (err) {
        return; // the server is restarting: try again on the next tick
      }
      const rows = new Map([...body.rows].map((r) => [r.dataset.runId, r]));
      const ordered = runs.map((run) => {
        const row = rows.get(run.run_id) || newRow(run);
        setBadge(row.querySelector(".status .badge"), "status", run.status);
        row.querySelector(".health").replaceChildren(healthCell(run.health));
        const open = row.querySelector(".open-alerts");
        open.textContent = String(run.open_alerts);
        open.classList.toggle("has-alerts", run.open_alerts > 0);
        row.querySelector(".last-step").textContent = run.last_step === null ? "–" : String(run.last_step);
        return row;
      });
      // newest first, as the API orders them; left alone when unchanged so focus stays put
      const same = ordered.length === body.rows.length && ordered.every((r, i) => r === body.rows[i]);
      if (!same) body.replaceChildren(...ordered);
      table.hidden = ordered.length === 0;
      document.getElementById("runs-empty").hidden = ordered.length > 0;
    }
    setInterval(refresh, REFRESH_MS);

    function picked() {
      return [...body.querySelectorAll(".pick:checked")].map((box) => box.value);
    }
    body.addEventListener("change", () => {
      const ids = picked();
      compareButton.disabled = ids.length < 1;
      document.getElementById("compare-count").textContent =
        ids.length ? ids.length + " selected" : "Tick runs to overlay them.";
    });
    compareForm.addEventListener("submit", () => {
      compareForm.elements.runs.value = picked().join(",");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const runsTable = document.getElementById("runs-table");
    if (runsTable) initRunsPage(runsTable);
  });
})();
