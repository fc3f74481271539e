// The run page: charts load when their card scrolls into view (IntersectionObserver), from
// GET /api/v1/runs/{id}/figures/{indicator}; the SSE stream then extends lines and heatmaps,
// updates the newest values and the worst layers, and alert events refresh health and markers.
"use strict";

(function () {
  const { el, worstFirst, formatValue, fetchJSON, plot, badge, setBadge } = window.cw;
  const CARD_LATEST = 8;
  const LOADS_AT_ONCE = 2; // the server has few cores: two figures at a time
  let firstChart = true;

  function initRunPage(live) {
    const runUrl = "/api/v1/runs/" + encodeURIComponent(live.run_id);
    const cards = new Map(); // indicator -> card state
    const queue = [];
    let loading = 0;

    for (const node of document.querySelectorAll(".card[data-indicator]")) {
      const name = node.dataset.indicator;
      const spec = live.indicators[name];
      if (!spec) continue;
      cards.set(name, {
        name, spec, node, state: "idle", buffer: [], smooth: 0, raw: new Map(),
        lines: document.getElementById(spec.dom_id),
        heat: document.getElementById(spec.dom_id + "-heat"),
        latest: new Map(),
      });
    }

    // ------------------------------------------------------------------ loading

    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const card = cards.get(entry.target.dataset.indicator);
        if (entry.isIntersecting && card && card.state === "idle") {
          card.state = "queued";
          queue.push(card);
        }
      }
      pump();
    }, { rootMargin: "300px 0px" });
    for (const card of cards.values()) observer.observe(card.node);

    function pump() {
      // the first chart loads alone: it is the one the reader waits for
      while (loading < (firstChart ? 1 : LOADS_AT_ONCE) && queue.length) {
        loading++;
        load(queue.shift()).finally(() => { loading--; pump(); });
      }
    }

    async function load(card) {
      card.state = "loading";
      card.node.dataset.state = "loading";
      // the first chart's steps, for bench/run_page.py: where its time goes
      const mark = (name) => { if (firstChart) performance.mark(name); };
      mark("cw-first-request");
      let body;
      try {
        body = await fetchJSON(runUrl + "/figures/" + encodeURIComponent(card.name));
      } catch (err) {
        card.state = "idle"; // tried again when it scrolls into view again
        card.lines.replaceChildren(el("p", { class: "loading error", text: "Could not load: " + err.message }));
        card.node.dataset.state = "error";
        return;
      }
      mark("cw-first-fetched");
      if (!card.lines.data) card.lines.replaceChildren(); // the "Loading…" placeholder
      await plot(card.lines, body.lines);
      mark("cw-first-lines");
      card.raw = new Map(card.lines.data.filter(isProbe).map((t) => [t.name, { x: Array.from(t.x), y: Array.from(t.y) }]));
      if (card.smooth) applySmoothing(card);
      if (card.heat && body.heatmap) await plot(card.heat, body.heatmap);
      mark("cw-first-heatmap");
      card.latest = new Map(body.latest.map((v) => [v.probe, v]));
      card.state = "ready";
      card.node.dataset.state = "ready";
      markStep(card);
      const pending = card.buffer;
      card.buffer = [];
      if (pending.length) extend(card, pending);
      renderLatest(card);
      if (firstChart) {
        firstChart = false;
        performance.mark("cw-first-chart");
      }
    }

    const isProbe = (t) => t.uid !== "alerts" && t.uid !== "nonfinite";

    // ------------------------------------------------------------------ controls

    for (const card of cards.values()) {
      card.node.querySelector(".log-toggle").addEventListener("change", (ev) => {
        if (card.state === "ready") Plotly.relayout(card.lines, { "yaxis.type": ev.target.checked ? "log" : "linear" });
        card.log = ev.target.checked;
      });
      card.node.querySelector(".smooth").addEventListener("input", (ev) => {
        card.smooth = Number(ev.target.value);
        if (card.state === "ready") applySmoothing(card);
      });
    }

    // Debiased exponential moving average (as TensorBoard): gaps stay gaps.
    function ema(ys, w) {
      if (!w) return ys.slice();
      let last = 0, n = 0;
      return ys.map((y) => {
        if (y === null || !Number.isFinite(y)) return y;
        last = last * w + (1 - w) * y;
        n++;
        return last / (1 - Math.pow(w, n));
      });
    }

    function applySmoothing(card) {
      const indices = [], ys = [];
      card.lines.data.forEach((t, i) => {
        const raw = card.raw.get(t.name);
        if (!isProbe(t) || !raw) return;
        indices.push(i);
        ys.push(ema(raw.y, card.smooth));
      });
      if (indices.length) Plotly.restyle(card.lines, { y: ys }, indices);
    }

    // --------------------------------------------------------------- live points

    // The line of a probe, added when a probe first appears live; -1 for a layer the chart
    // does not draw: a chart of the worst layers only (meta.worst_of) or one with a line in
    // every palette colour stays as it is, and the heatmap and the list show the layer.
    function traceIndex(card, probe) {
      const data = card.lines.data;
      const found = data.findIndex((t) => isProbe(t) && t.name === probe);
      if (found >= 0) return found;
      const meta = card.lines.layout.meta || {};
      if (meta.worst_of || card.raw.size >= live.palette.length) return -1;
      const trace = Object.assign({}, live.trace_style, { x: [], y: [], name: probe });
      trace.line = Object.assign({}, live.trace_style.line, { color: live.palette[card.raw.size] });
      Plotly.addTraces(card.lines, trace);
      card.raw.set(probe, { x: [], y: [] });
      return data.length - 1;
    }

    function extend(card, points) {
      const byProbe = new Map();
      for (const p of points) {
        const raw = card.raw.get(p.probe);
        const last = raw && raw.x.length ? raw.x[raw.x.length - 1] : -1;
        if (p.step <= last) continue; // already drawn (read before the stream caught up)
        if (!byProbe.has(p.probe)) byProbe.set(p.probe, []);
        byProbe.get(p.probe).push(p);
      }
      if (!byProbe.size) return;
      const indices = [], xs = [], ys = [];
      for (const [probe, pts] of byProbe) {
        const index = traceIndex(card, probe);
        if (index < 0) continue;
        const raw = card.raw.get(probe);
        for (const p of pts) { raw.x.push(p.step); raw.y.push(p.value); }
        indices.push(index);
        xs.push(pts.map((p) => p.step));
        ys.push(pts.map((p) => p.value));
      }
      if (indices.length) Plotly.extendTraces(card.lines, { x: xs, y: ys }, indices);
      if (card.smooth) applySmoothing(card);
      if (card.heat && card.heat.data) extendHeatmap(card, points);
    }

    // A point lands in its step bin; a cell keeps the worst value (a NaN is the worst).
    function extendHeatmap(card, points) {
      const trace = card.heat.data[0];
      const meta = card.heat.layout.meta || {};
      if (!meta.width) return;
      const x = Array.from(trace.x), z = trace.z.map((row) => Array.from(row));
      const rows = new Map(trace.y.map((probe, i) => [probe, i]));
      const high = meta.worst !== "min";
      const bad = high ? trace.zmax : trace.zmin;
      for (const p of points) {
        const row = rows.get(p.probe);
        if (row === undefined) continue;
        const col = Math.floor((p.step - meta.start) / meta.width);
        while (x.length <= col) {
          x.push(meta.start + x.length * meta.width);
          for (const r of z) r.push(null);
        }
        const v = p.value === null ? bad : p.value;
        const old = z[row][col];
        z[row][col] = old === null ? v : high ? Math.max(old, v) : Math.min(old, v);
      }
      Plotly.restyle(card.heat, { x: [x], z: [z] }, [0]);
    }

    function applyPoints(points) {
      const byIndicator = new Map();
      for (const p of points) {
        const spec = live.indicators[p.indicator];
        if (!spec) {
          document.getElementById("new-indicators").hidden = false;
          continue;
        }
        noteLatest(p);
        if (!byIndicator.has(p.indicator)) byIndicator.set(p.indicator, []);
        byIndicator.get(p.indicator).push(p);
      }
      for (const [name, pts] of byIndicator) {
        const card = cards.get(name);
        if (!card) continue;
        // a card being (re)loaded keeps the points for after; a drawn one extends at once
        if (card.state === "loading") card.buffer.push(...pts);
        else if (card.lines.data) extend(card, pts);
        if (card.state !== "loading") renderLatest(card);
      }
      renderWorst();
    }

    // ------------------------------------------------- newest values, worst layers

    const worst = new Map((live.worst || []).map((v) => [v.indicator + "|" + v.probe, v]));

    // p arrives judged by the server (judgement, threshold, margin): shown, never re-judged
    function noteLatest(p) {
      const card = cards.get(p.indicator);
      if (card) card.latest.set(p.probe, p);
      const key = p.indicator + "|" + p.probe;
      if (["critical", "warn", "info"].includes(p.judgement)) worst.set(key, p);
      else worst.delete(key);
    }

    function renderLatest(card) {
      const values = [...card.latest.values()].sort((a, b) => worstFirst(a, b, card.spec.direction));
      if (!values.length) return;
      const list = card.node.querySelector(".latest");
      // the list is the chart's legend: each layer with its line's colour
      const colours = new Map((card.lines.data || []).filter(isProbe).map((t) => [t.name, t.line.color]));
      list.replaceChildren(...values.slice(0, CARD_LATEST).map((v) =>
        el("li", { class: "severity-" + v.judgement, dataset: { probe: v.probe } },
          el("span", { class: "swatch", style: "background: " + (colours.get(v.probe) || "transparent") }),
          el("span", { class: "probe", text: v.probe }), " ",
          el("span", { class: "value", text: formatValue(v.value) }))));
      const more = values.length - CARD_LATEST;
      if (more > 0) list.append(el("li", { class: "more muted", text: "+ " + more + " more layers" }));
      const top = values[0].judgement;
      card.node.className = card.node.className.replace(/severity-\w+/, "severity-" + top);
      const slot = card.node.querySelector(".card-badge");
      slot.replaceChildren(["critical", "warn", "info"].includes(top) ? badge("severity", top) : "");
    }

    function renderWorst() {
      const rows = [...worst.values()].sort(worstFirst).slice(0, live.worst_limit);
      const body = document.getElementById("worst-rows");
      body.replaceChildren(...rows.map((v) => {
        const spec = live.indicators[v.indicator];
        return el("tr", { class: "severity-" + v.judgement, dataset: { key: v.indicator + "|" + v.probe } },
          el("td", {}, el("a", { href: "#" + spec.dom_id + "-card", text: spec.title })),
          el("td", { class: "mono", text: v.probe }),
          el("td", { class: "num value" }, badge("severity", v.judgement), " " + formatValue(v.value)),
          el("td", { class: "num", text: v.threshold === null ? "–" : formatValue(v.threshold) }),
          el("td", { class: "num", text: String(v.step) }));
      }));
      document.getElementById("worst-table").hidden = rows.length === 0;
      document.getElementById("worst-none").hidden = rows.length > 0;
    }

    // ------------------------------------------------------------------- alerts

    let healthTimer = null;
    function applyAlerts(events) {
      for (const name of new Set(events.map((e) => e.indicator))) {
        const card = cards.get(name);
        if (card && card.state === "ready") { card.state = "queued"; queue.push(card); }
      }
      pump(); // ready cards reload their figures: markers and thresholds from the server
      clearTimeout(healthTimer);
      healthTimer = setTimeout(refreshHealth, 200);
    }

    async function refreshHealth() {
      let health;
      try {
        health = await fetchJSON(runUrl + "/health");
      } catch (err) {
        return;
      }
      document.getElementById("open-alerts").textContent =
        health.open_alerts + " open alert" + (health.open_alerts === 1 ? "" : "s");
      document.getElementById("health-families").replaceChildren(...health.families.map(healthChip));
      for (const f of health.families) {
        const chip = document.querySelector('.family-nav .chip[data-family="' + f.family + '"]');
        if (chip) chip.className = "chip state-" + f.state;
      }
      document.getElementById("recent-alerts").replaceChildren(...health.recent.map(window.cw.eventRow));
      document.getElementById("recent-none").hidden = health.recent.length > 0;
    }

    function healthChip(f) {
      const text = f.firing ? f.firing + " " + f.state : f.pending ? f.pending + " pending" : "ok";
      return el("li", { class: "chip state-" + f.state, dataset: { family: f.family } },
        el("a", { href: "#family-" + f.family, text: f.title }), " ",
        el("span", { class: "chip-state", text }));
    }

    // ---------------------------------------------------------------- ?step=N

    function markStep(card) {
      if (live.step === null || live.step === undefined) return;
      const shape = {
        type: "line", xref: "x", yref: "paper", x0: live.step, x1: live.step, y0: 0, y1: 1,
        line: { color: "#a855f7", width: 2, dash: "dot" },
      };
      for (const node of [card.lines, card.heat]) {
        if (!node || !node.layout) continue;
        const shapes = (node.layout.shapes || []).filter((s) => s.name !== "step");
        Plotly.relayout(node, { shapes: shapes.concat([Object.assign({ name: "step" }, shape)]) });
      }
    }

    // the sticky family bar covers the top of whatever scrolls to the top: keep it clear
    const familyNav = document.querySelector(".family-nav");
    const setStickyOffset = () => {
      if (!familyNav) return;
      const offset = familyNav.getBoundingClientRect().height + 8;
      document.documentElement.style.setProperty("--sticky-offset", offset + "px");
    };
    setStickyOffset();
    window.addEventListener("resize", setStickyOffset);

    if (live.focus && cards.has(live.focus)) {
      const node = cards.get(live.focus).node;
      node.classList.add("focused");
      node.scrollIntoView({ block: "start" });
    }

    // ------------------------------------------------------------------ spectrum

    const spectrumForm = document.getElementById("spectrum-form");
    if (spectrumForm) {
      const chart = document.getElementById("spectrum-chart");
      const note = document.getElementById("spectrum-note");
      const show = async () => {
        const form = new FormData(spectrumForm);
        const query = new URLSearchParams({ probe: form.get("probe"), step: form.get("step") || "0" });
        try {
          const body = await fetchJSON(runUrl + "/spectrum?" + query);
          await plot(chart, body.figure);
          const steps = body.spectra.map((s) => s.step);
          note.textContent = "Layer " + body.probe + ", sampled step " + steps[steps.length - 1] +
            (steps.length > 1 ? " against step " + steps[0] : "") + ".";
        } catch (err) {
          note.textContent = err.message;
        }
      };
      spectrumForm.addEventListener("submit", (ev) => { ev.preventDefault(); show(); });
      const seen = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting)) { seen.disconnect(); show(); }
      }, { rootMargin: "300px 0px" });
      seen.observe(chart);
    }

    // ---------------------------------------------------------------------- SSE

    function applyRun(state) {
      setBadge(document.getElementById("run-status"), "status", state.status);
      document.getElementById("run-last-step").textContent =
        state.last_step === null ? "–" : String(state.last_step);
    }

    // The browser reconnects by itself and sends Last-Event-ID, which the server prefers to
    // ?after=; only a stream the browser gave up on (an HTTP error) is reopened by hand.
    let cursor = live.cursor;
    function connect() {
      const query = new URLSearchParams({ after: cursor, alerts_after: live.alerts_after });
      const source = new EventSource(runUrl + "/events?" + query);
      source.addEventListener("points", (ev) => {
        if (ev.lastEventId) cursor = Number(ev.lastEventId);
        applyPoints(JSON.parse(ev.data).points);
      });
      source.addEventListener("alert", (ev) => applyAlerts(JSON.parse(ev.data).alerts));
      source.addEventListener("run", (ev) => applyRun(JSON.parse(ev.data)));
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
      };
    }
    connect();
  }

  // Deleting the run: asked once, with the run's name, since nothing brings it back.
  function initDelete(runId) {
    const button = document.getElementById("delete-run");
    if (!button) return;
    button.addEventListener("click", async () => {
      const question = "Delete run " + button.dataset.name + " with all its points, raw " +
        "statistics and alerts? This cannot be undone.";
      if (!window.confirm(question)) return;
      button.disabled = true;
      try {
        await fetchJSON("/api/v1/runs/" + encodeURIComponent(runId), { method: "DELETE" });
        window.location.assign("/?project=" + encodeURIComponent(button.dataset.project));
      } catch (error) {
        button.disabled = false;
        window.alert("The run was not deleted: " + error.message);
      }
    });
  }

  // The run's tags: typed comma-separated, replaced whole by PUT /api/v1/runs/{id}/tags.
  function initTags(runId) {
    const form = document.getElementById("run-tags");
    if (!form) return;
    const status = document.getElementById("run-tags-status");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const tags = form.elements.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
      try {
        const saved = await fetchJSON("/api/v1/runs/" + encodeURIComponent(runId) + "/tags",
          { method: "PUT", json: { tags } });
        document.getElementById("run-tag-list").replaceChildren(...saved.tags.map((t) =>
          el("a", { class: "tag", href: "/?tag=" + encodeURIComponent(t), text: t })));
        form.elements.tags.value = saved.tags.join(", ");
        status.textContent = "saved";
      } catch (error) {
        status.textContent = error.message;
      }
    });
  }

  // "Silence this run for 2 h": a silence matching exactly this run's name (glob characters
  // in it are bracketed so they match themselves).
  function initSilenceButton() {
    const button = document.getElementById("silence-run");
    if (!button) return;
    button.addEventListener("click", async () => {
      const status = document.getElementById("silence-run-status");
      const run = button.dataset.run.replace(/[*?[]/g, (c) => "[" + c + "]");
      const api = "/api/v1/projects/" + encodeURIComponent(button.dataset.project) + "/silences";
      try {
        const created = await fetchJSON(api, {
          method: "POST",
          json: { run, duration_s: 2 * 3600, comment: "silenced from the run page" },
        });
        status.textContent = "Silenced until " + new Date(created.ends_at).toLocaleString();
        button.disabled = true;
      } catch (err) {
        status.textContent = "Could not silence: " + err.message;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("cw-run-data");
    if (data) {
      const live = JSON.parse(data.textContent);
      initRunPage(live);
      initDelete(live.run_id);
      initTags(live.run_id);
    }
    initSilenceButton();
  });
})();
