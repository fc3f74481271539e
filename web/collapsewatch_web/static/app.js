// collapsewatch dashboards: what every page shares. Plain JavaScript, no build step.
// Each page has its own small script (run.js, runs.js, compare.js, alerts.js, settings.js)
// that uses window.cw.
"use strict";

(function () {
  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");
  const JUDGEMENTS = ["critical", "warn", "info", "ok", "none"];

  // Same rules as collapsewatch_web.render.format_value.
  function formatValue(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "NaN";
    if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(3)));
  }

  function formatTime(iso) {
    // SQLite hands back naive timestamps, which are UTC: say so before Date reads them
    const text = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z";
    return new Date(text).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  // Same order as collapsewatch_web.views.worst_first; with a direction, nearest the bad end.
  function badness(v, direction) {
    if (v.value === null || !Number.isFinite(v.value)) return Infinity;
    return direction === "high_is_bad" ? v.value : direction === "low_is_bad" ? -v.value : 0;
  }
  function worstFirst(a, b, direction) {
    const rank = JUDGEMENTS.indexOf(a.judgement) - JUDGEMENTS.indexOf(b.judgement);
    if (rank !== 0) return rank;
    if (b.margin !== a.margin) return b.margin - a.margin;
    const diff = badness(b, direction) - badness(a, direction);
    return Number.isNaN(diff) ? 0 : diff;
  }

  // el("li", {class: "x", dataset: {id: 1}}, "text", child): a small DOM builder.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function badge(kind, value, text) {
    return el("span", { class: "badge " + kind + "-" + value, text: text || value });
  }

  function setBadge(node, kind, value) {
    node.className = "badge " + kind + "-" + value;
    node.textContent = value;
  }

  // One alert event: the markup of the event_row macro in _macros.html.
  function eventRow(e, withRun) {
    const step = e.step === null ? null : el("a", {
      class: "event-step",
      href: "/runs/" + e.run_id + "?step=" + e.step + (e.indicator ? "&indicator=" + encodeURIComponent(e.indicator) : ""),
      text: "step " + e.step,
    });
    const sev = e.severity === "warning" ? "warn" : e.severity;
    const when = formatTime(e.created_at);
    return el("li", { class: "event status-" + e.status, dataset: { id: e.id } },
      el("span", { class: "event-head" }, badge("severity", sev, e.severity), " ",
        el("span", { class: "event-status", text: e.status })),
      el("span", { class: "event-message" },
        withRun ? el("a", { class: "mono", href: "/runs/" + e.run_id, text: e.run_name }) : null,
        withRun ? " " : null, e.message),
      el("span", { class: "event-meta" }, step, step ? " " : null,
        el("time", { datetime: e.created_at, title: when, text: when.slice(11, 16) })));
  }

  // JSON over fetch; a non-2xx answer throws an Error carrying the status and the body.
  async function fetchJSON(url, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    // the server takes POST/PUT/PATCH only declared JSON, even without a body (what a page
    // on another site cannot send without a CORS preflight)
    if (/^(POST|PUT|PATCH)$/i.test(opts.method || "GET")) {
      opts.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, opts);
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = new Error(describeError(body, response.status));
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function describeError(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
    return "HTTP " + status;
  }

  // 422 problems by field: {"threshold": "...", "rule.name": "..."} (loc without "body").
  function fieldErrors(error) {
    const out = {};
    const detail = error && error.body && error.body.detail;
    if (!Array.isArray(detail)) return out;
    for (const d of detail) {
      const loc = (d.loc || []).filter((p) => p !== "body" && p !== "query");
      out[loc.join(".") || "_"] = (d.msg || "").replace(/^Value error, /, "");
    }
    return out;
  }

  // ----------------------------------------------------------------------- charts

  const plotConfig = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d"],
  };
  // the Plotly relayout patch of each theme, from collapsewatch_web.figures (base.html)
  const themeData = document.getElementById("cw-themes");
  const themes = themeData ? JSON.parse(themeData.textContent) : null;
  const drawn = new Set();

  function themePatch() {
    return themes ? themes[darkScheme.matches ? "dark" : "light"] : {};
  }

  // A copy of a layout with a relayout patch ({"xaxis.gridcolor": ...}) written into it.
  function patched(layout, patch) {
    const out = Object.assign({}, layout);
    for (const [key, value] of Object.entries(patch)) {
      const parts = key.split(".");
      let node = out;
      for (const part of parts.slice(0, -1)) {
        node[part] = Object.assign({}, node[part]); // copied: the figure itself stays as sent
        node = node[part];
      }
      node[parts[parts.length - 1]] = value;
    }
    return out;
  }

  // Draw (or redraw, keeping zoom) a figure from the server in the page's colour scheme. The
  // scheme's colours go into the layout before drawing: a relayout after it made Plotly
  // compute and draw the chart twice (font.color recalculates everything).
  function plot(node, figure) {
    const layout = patched(figure.layout, themePatch());
    const first = !drawn.has(node);
    drawn.add(node);
    const draw = first ? Plotly.newPlot : Plotly.react;
    return draw(node, figure.data, layout, plotConfig);
  }

  darkScheme.addEventListener("change", () => {
    for (const node of drawn) {
      if (node.isConnected) Plotly.relayout(node, themePatch());
    }
  });

  window.cw = {
    formatValue, formatTime, worstFirst, el, badge, setBadge,
    fetchJSON, fieldErrors, plot, eventRow, JUDGEMENTS,
  };
})();
