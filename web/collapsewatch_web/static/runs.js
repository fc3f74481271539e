// The runs page: the table refreshes itself from the JSON API.
"use strict";

(function () {
  const { setBadge, formatTime } = window.cw;

  function initRunsPage(table) {
    const project = table.dataset.project;
    const url = "/api/v1/runs" + (project ? "?project=" + encodeURIComponent(project) : "");
    const body = table.tBodies[0];
    const template = document.getElementById("run-row");

    function newRow(run) {
      const row = template.content.firstElementChild.cloneNode(true);
      row.dataset.runId = run.run_id;
      const projectLink = row.querySelector("a.project");
      projectLink.href = "/?project=" + encodeURIComponent(run.project);
      projectLink.textContent = run.project;
      const name = row.querySelector("a.run-name");
      name.href = "/runs/" + encodeURIComponent(run.run_id);
      name.textContent = run.name;
      const time = row.querySelector("time");
      time.dateTime = run.started_at;
      time.textContent = formatTime(run.started_at);
      return row;
    }

    async function refresh() {
      if (document.hidden) return;
      let runs;
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        runs = await response.json();
      } catch (err) {
        return; // the server is restarting: try again on the next tick
      }
      const rows = new Map([...body.rows].map((r) => [r.dataset.runId, r]));
      const ordered = runs.map((run) => {
        const row = rows.get(run.run_id) || newRow(run);
        setBadge(row.querySelector(".status .badge"), "status", run.status);
        row.querySelector(".last-step").textContent = run.last_step === null ? "–" : String(run.last_step);
        return row;
      });
      // newest first, as the API orders them; left alone when unchanged so focus stays put
      const same = ordered.length === body.rows.length && ordered.every((r, i) => r === body.rows[i]);
      if (!same) body.replaceChildren(...ordered);
      table.hidden = ordered.length === 0;
      document.getElementById("runs-empty").hidden = ordered.length > 0;
    }
    setInterval(refresh, 5000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const runsTable = document.getElementById("runs-table");
    if (runsTable) initRunsPage(runsTable);
  });
})();
