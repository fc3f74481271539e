// The alerts page's rule editor: create, edit, enable/disable rules through the rules API
// (JSON over fetch; a 422 is shown next to its field) and back-test the form's rule, unsaved,
// on a past run (POST .../rules/backtest), drawing where it would have fired.
"use strict";

(function () {
  const { el, fetchJSON, fieldErrors, plot, badge, formatValue } = window.cw;
  const NUMBERS = ["threshold", "low", "high", "percent", "baseline_points", "pending_points",
    "pending_steps", "recovery", "warmup_steps", "repeat_interval_s"];
  const TEXTS = ["name", "indicator", "condition", "reference", "probe", "run", "severity", "description"];

  function initRuleEditor(data) {
    const form = document.getElementById("rule-form");
    if (!form) return;
    const api = "/api/v1/projects/" + encodeURIComponent(data.project) + "/rules";
    const rules = new Map(data.rules.map((r) => [r.id, r]));
    const saved = document.getElementById("rule-saved");

    // Only the fields of the chosen condition are shown.
    function showFields() {
      const condition = form.elements.condition.value;
      for (const field of form.querySelectorAll(".field[data-for]")) {
        field.hidden = !field.dataset.for.split(" ").includes(condition);
      }
    }
    form.elements.condition.addEventListener("change", showFields);

    // The form as a rule body: every field, empty ones as null (a PUT then clears them).
    function body() {
      const out = {};
      for (const name of TEXTS) {
        const value = form.elements[name].value.trim();
        out[name] = value === "" ? null : value;
      }
      for (const name of NUMBERS) {
        const input = form.elements[name];
        out[name] = input.value === "" || input.closest(".field").hidden ? null : Number(input.value);
      }
      out.description = out.description || "";
      out.probe = out.probe || "*";
      out.enabled = form.elements.enabled.checked;
      for (const [key, value] of Object.entries(data.defaults)) {
        if (out[key] === null && value !== null) out[key] = value; // schema defaults
      }
      return out;
    }

    function fill(rule) {
      const values = Object.assign({}, data.defaults, rule || {});
      form.elements.id.value = rule ? rule.id : "";
      for (const name of TEXTS.concat(NUMBERS)) {
        const value = values[name];
        form.elements[name].value = value === null || value === undefined ? "" : value;
      }
      if (!rule) {
        form.elements.name.value = "";
        form.elements.probe.value = "*";
        form.elements.condition.value = "above";
        form.elements.severity.value = "warning";
        form.elements.indicator.selectedIndex = 0;
      }
      form.elements.enabled.checked = rule ? rule.enabled : true;
      document.getElementById("rule-form-title").textContent = rule ? "Edit rule " + rule.name : "New rule";
      document.getElementById("rule-save").textContent = rule ? "Save rule" : "Create rule";
      clearErrors();
      showFields();
    }

    function clearErrors() {
      for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
      for (const f of form.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
    }

    // 422 problems next to their fields; a rule-level one goes to the field it names.
    function showErrors(err) {
      clearErrors();
      const problems = fieldErrors(err);
      if (!Object.keys(problems).length) problems._ = err.message;
      for (let [loc, msg] of Object.entries(problems)) {
        loc = loc.replace(/^rule\./, "");
        const named = /'(\w+)'/.exec(msg);
        if ((loc === "_" || loc === "rule") && named && document.getElementById("err-" + named[1])) loc = named[1];
        const slot = document.getElementById("err-" + loc) || document.getElementById("err-_");
        slot.textContent = msg;
        const field = slot.closest(".field");
        if (field) field.classList.add("invalid");
      }
      const first = form.querySelector(".field.invalid input, .field.invalid select");
      if (first) first.focus();
    }

    async function refreshRules() {
      const list = await fetchJSON(api);
      rules.clear();
      for (const r of list) rules.set(r.id, r);
      document.getElementById("rules-rows").replaceChildren(...list.map(ruleRow));
    }

    function ruleRow(r) {
      return el("tr", { dataset: { ruleId: r.id }, class: r.enabled ? null : "disabled" },
        el("td", { text: r.name }), el("td", { class: "mono", text: r.indicator }),
        el("td", { text: summary(r) }), el("td", { class: "warmup", text: warmup(r) }),
        el("td", { class: "mono", text: r.probe }),
        el("td", {}, badge("severity", r.severity === "warning" ? "warn" : r.severity, r.severity)),
        el("td", { text: r.enabled ? "enabled" : "disabled" }),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "secondary edit-rule", dataset: { ruleId: r.id }, text: "Edit" }), " ",
          el("button", { type: "button", class: "secondary toggle-rule", dataset: { ruleId: r.id }, text: r.enabled ? "Disable" : "Enable" })));
    }

    // Same words as collapsewatch_web.render.warmup_text.
    function warmup(r) {
      if (!r.warmup_steps) return "–";
      if (r.condition === "drop" || r.condition === "rise") return "from step " + r.warmup_steps;
      return "until step " + r.warmup_steps + " or a healthy point";
    }

    // Same words as collapsewatch_web.render.rule_summary.
    function summary(r) {
      let text;
      if (r.condition === "above" || r.condition === "below") text = r.condition + " " + formatValue(r.threshold);
      else if (r.condition === "outside") text = "outside [" + formatValue(r.low) + ", " + formatValue(r.high) + "]";
      else text = r.condition + " " + r.percent + "% from its " + r.reference;
      if (r.pending_points) text += " for " + r.pending_points + (r.pending_points === 1 ? " point" : " points");
      else if (r.pending_steps) text += " for " + r.pending_steps + " steps";
      return text;
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const id = form.elements.id.value;
      const rule = body();
      try {
        const stored = await fetchJSON(id ? api + "/" + id : api, { method: id ? "PUT" : "POST", json: rule });
        await refreshRules();
        fill(stored);
        saved.textContent = (id ? "Saved " : "Created ") + stored.name + ".";
      } catch (err) {
        saved.textContent = "";
        showErrors(err);
      }
    });

    document.getElementById("rules-table").addEventListener("click", async (ev) => {
      const button = ev.target.closest("button");
      if (!button) return;
      const rule = rules.get(Number(button.dataset.ruleId));
      if (!rule) return;
      if (button.classList.contains("edit-rule")) {
        fill(rule);
        form.scrollIntoView({ block: "start" });
        form.elements.name.focus();
      } else if (button.classList.contains("toggle-rule")) {
        const action = rule.enabled ? "/disable" : "/enable";
        try {
          await fetchJSON(api + "/" + rule.id + action, { method: "POST" });
          await refreshRules();
          saved.textContent = rule.name + (rule.enabled ? " disabled." : " enabled.");
        } catch (err) {
          saved.textContent = err.message;
        }
      }
    });

    document.getElementById("rule-new").addEventListener("click", () => { fill(null); saved.textContent = ""; });

    // --------------------------------------------------------------------- back-test

    const chart = document.getElementById("backtest-chart");
    const summaryLine = document.getElementById("backtest-summary");
    document.getElementById("backtest-button").addEventListener("click", async () => {
      const request = { run_id: form.elements.backtest_run.value, rule: body() };
      if (!request.rule.name) request.rule.name = "back-test";
      summaryLine.textContent = "Replaying…";
      try {
        const result = await fetchJSON(api + "/backtest", { method: "POST", json: request });
        clearErrors();
        const fired = result.events.filter((e) => e.status === "firing");
        summaryLine.textContent = !result.run_matches
          ? "The rule's run glob does not match " + result.run_name + ": it would not watch it."
          : result.probes.length === 0
            ? "No layer of " + result.run_name + " matches the rule's layer glob."
            : "Over " + result.points_judged + " points of " + result.probes.length + " layer(s) of " +
              result.run_name + " the rule would have fired " + fired.length + " time(s).";
        // retention deleted old raw statistics: the replay used the kept points, and says so
        if (result.note) summaryLine.textContent += " Note: " + result.note + ".";
        document.getElementById("backtest-events").replaceChildren(...result.events.slice(0, 50).map((e) =>
          el("li", { class: "event status-" + e.status },
            el("span", { class: "event-head" },
              badge("severity", e.severity === "warning" ? "warn" : e.severity, e.severity), " ",
              el("span", { class: "event-status", text: e.status })),
            el("span", { class: "event-message", text: e.message }),
            el("span", { class: "event-meta" },
              el("a", { class: "event-step", href: "/runs/" + result.run_id + "?step=" + e.step, text: "step " + e.step })))));
        chart.hidden = false;
        await plot(chart, result.figure);
      } catch (err) {
        summaryLine.textContent = "";
        showErrors(err);
      }
    });

    fill(null);
  }

  // Silences: create from the form (a 422 is shown next to its field), delete from the table;
  // the page reloads to show the silence in force.
  function initSilences(data) {
    const form = document.getElementById("silence-form");
    if (!form) return;
    const api = "/api/v1/projects/" + encodeURIComponent(data.project) + "/silences";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { duration_s: Number(form.elements.hours.value) * 3600, comment: form.elements.comment.value };
      for (const name of ["run", "rule", "indicator", "probe", "severity"]) {
        if (form.elements[name].value) body[name] = form.elements[name].value;
      }
      for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
      try {
        const created = await fetchJSON(api, { method: "POST", json: body });
        document.getElementById("silence-saved").textContent = "Silence " + created.id + " in force";
        window.location.reload();
      } catch (err) {
        const byField = err.status === 422 ? fieldErrors(err) : { _: err.message };
        for (const [field, message] of Object.entries(byField)) {
          const slot = document.getElementById("err-silence-" + field) || document.getElementById("err-silence-_");
          slot.textContent = message;
        }
      }
    });
    for (const button of document.querySelectorAll(".delete-silence")) {
      button.addEventListener("click", async () => {
        await fetchJSON(api + "/" + button.dataset.silenceId, { method: "DELETE" });
        window.location.reload();
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("cw-alerts-data");
    if (!data) return;
    const parsed = JSON.parse(data.textContent);
    initRuleEditor(parsed);
    if (parsed.project) initSilences(parsed);
  });
})();
