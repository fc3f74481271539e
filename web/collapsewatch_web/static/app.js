// collapsewatch dashboards: plain JavaScript, no build step.
// The run page draws the embedded figures and extends them from the run's SSE stream;
// the runs page refreshes its table from the JSON API.
"use strict";

(function () {
  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

  // Same rules as collapsewatch_web.render.format_value and figures.severity.
  function formatValue(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "NaN";
    if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(3)));
  }

  function severity(chart, v) {
    if (v === null || !Number.isFinite(v) || chart.direction === "info") return "none";
    if (chart.warn === null && chart.critical === null) return "none";
    const worse = chart.direction === "high_is_bad" ? (a, t) => a >= t : (a, t) => a <= t;
    if (chart.critical !== null && worse(v, chart.critical)) return "critical";
    if (chart.warn !== null && worse(v, chart.warn)) return "warn";
    return "ok";
  }

  function formatTime(iso) {
    // SQLite hands back naive timestamps, which are UTC: say so before Date reads them
    const text = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z";
    return new Date(text).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function setBadge(el, kind, value) {
    el.className = "badge " + kind + "-" + value;
    el.textContent = value;
  }

  // ------------------------------------------------------------------------- run page

  function initRunPage(live) {
    const charts = new Map(); // indicator -> {spec, el, card}
    const themePatch = () => live.themes[darkScheme.matches ? "dark" : "light"];
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

    for (const spec of live.charts) {
      const el = document.getElementById(spec.dom_id);
      if (!el) continue;
      charts.set(spec.indicator, { spec, el, card: document.getElementById(spec.dom_id + "-card") });
      Plotly.newPlot(el, spec.figure.data, spec.figure.layout, config).then(() => {
        if (darkScheme.matches) Plotly.relayout(el, themePatch());
      });
    }
    darkScheme.addEventListener("change", () => {
      for (const { el } of charts.values()) Plotly.relayout(el, themePatch());
    });

    function latestItem(chart, probe, colour) {
      for (const li of chart.card.querySelectorAll(".latest li")) {
        if (li.dataset.probe === probe) return li;
      }
      const li = document.createElement("li");
      li.dataset.probe = probe;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      const name = document.createElement("span");
      name.className = "probe";
      name.textContent = probe;
      const value = document.createElement("span");
      value.className = "value";
      li.append(swatch, " ", name, " ", value);
      chart.card.querySelector(".latest").append(li);
      return li;
    }

    function traceIndex(chart, probe) {
      const gd = chart.el;
      const found = gd.data.findIndex((t) => t.name === probe);
      if (found >= 0) return found;
      const colour = live.palette[gd.data.length % live.palette.length];
      const trace = Object.assign({}, live.trace_style, { x: [], y: [], name: probe });
      trace.line = Object.assign({}, live.trace_style.line, { color: colour });
      Plotly.addTraces(gd, trace);
      latestItem(chart, probe, colour);
      return gd.data.length - 1;
    }

    function refreshSeverities(chart) {
      const levels = new Set();
      for (const li of chart.card.querySelectorAll(".latest li")) {
        levels.add(li.className.replace("severity-", ""));
      }
      const worst = ["critical", "warn", "ok"].find((s) => levels.has(s)) || "none";
      chart.card.classList.remove("severity-critical", "severity-warn", "severity-ok", "severity-none");
      chart.card.classList.add("severity-" + worst);
      const badge = chart.card.querySelector(".card-badge");
      badge.textContent = "";
      if (worst === "warn" || worst === "critical") {
        const span = document.createElement("span");
        setBadge(span, "severity", worst);
        badge.append(span);
      }
    }

    // Rebuild "Past a threshold" from the latest values shown in the cards.
    function refreshAttention() {
      const list = document.getElementById("attention-list");
      const hits = [];
      for (const chart of charts.values()) {
        const title = chart.card.querySelector("h3").textContent;
        for (const li of chart.card.querySelectorAll(".latest li")) {
          const level = li.className.replace("severity-", "");
          if (level === "warn" || level === "critical") hits.push({ chart, title, li, level });
        }
      }
      hits.sort((a, b) => (a.level === b.level ? 0 : a.level === "critical" ? -1 : 1));
      list.textContent = "";
      for (const hit of hits) {
        const item = document.createElement("li");
        item.className = "severity-" + hit.level;
        const badge = document.createElement("span");
        setBadge(badge, "severity", hit.level);
        const link = document.createElement("a");
        link.href = "#" + hit.chart.spec.dom_id + "-card";
        link.textContent = hit.title;
        const probe = document.createElement("span");
        probe.className = "probe";
        probe.textContent = hit.li.dataset.probe;
        const value = document.createElement("span");
        value.className = "value";
        value.textContent = hit.li.querySelector(".value").textContent;
        item.append(badge, " ", link, " ", probe, " ", value);
        list.append(item);
      }
      document.getElementById("attention-clear").hidden = hits.length > 0;
    }

    function applyPoints(points) {
      const byIndicator = new Map();
      for (const p of points) {
        if (!charts.has(p.indicator)) {
          // a chart needs the indicator's metadata, which only the server page has
          document.getElementById("new-indicators").hidden = false;
          continue;
        }
        if (!byIndicator.has(p.indicator)) byIndicator.set(p.indicator, new Map());
        const byProbe = byIndicator.get(p.indicator);
        if (!byProbe.has(p.probe)) byProbe.set(p.probe, []);
        byProbe.get(p.probe).push(p);
      }
      for (const [indicator, byProbe] of byIndicator) {
        const chart = charts.get(indicator);
        const indices = [], xs = [], ys = [];
        for (const [probe, pts] of byProbe) {
          indices.push(traceIndex(chart, probe));
          xs.push(pts.map((p) => p.step));
          ys.push(pts.map((p) => p.value));
          const last = pts[pts.length - 1];
          const li = latestItem(chart, probe, "");
          li.className = "severity-" + severity(chart.spec, last.value);
          li.querySelector(".value").textContent = formatValue(last.value);
        }
        Plotly.extendTraces(chart.el, { x: xs, y: ys }, indices);
        refreshSeverities(chart);
      }
      if (byIndicator.size) refreshAttention();
    }

    function applyRun(state) {
      setBadge(document.getElementById("run-status"), "status", state.status);
      document.getElementById("run-last-step").textContent =
        state.last_step === null ? "–" : String(state.last_step);
    }

    // The browser reconnects by itself and sends Last-Event-ID, which the server prefers to
    // ?after=; only a stream the browser gave up on (an HTTP error) is reopened by hand.
    let cursor = live.cursor;
    function connect() {
      const url = "/api/v1/runs/" + encodeURIComponent(live.run_id) + "/events?after=" + cursor;
      const source = new EventSource(url);
      source.addEventListener("points", (ev) => {
        if (ev.lastEventId) cursor = Number(ev.lastEventId);
        applyPoints(JSON.parse(ev.data).points);
      });
      source.addEventListener("run", (ev) => applyRun(JSON.parse(ev.data)));
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
      };
    }
    connect();
  }

  // ------------------------------------------------------------------------ runs page

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
    const liveData = document.getElementById("cw-run-data");
    if (liveData) initRunPage(JSON.parse(liveData.textContent));
    const runsTable = document.getElementById("runs-table");
    if (runsTable) initRunsPage(runsTable);
  });
})();
