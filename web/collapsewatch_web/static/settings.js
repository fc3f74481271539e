// A project's settings: ingest tokens (create, shown once; revoke) and webhooks (create with
// the secret shown once, send a test and show what the receiver said, delivery log, enable,
// delete), all through the JSON API.
"use strict";

(function () {
  const { el, fetchJSON, fieldErrors, formatTime } = window.cw;

  function initSettings(data) {
    const base = "/api/v1/projects/" + encodeURIComponent(data.project);

    function showErrors(form, err, prefix) {
      for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
      const problems = fieldErrors(err);
      if (!Object.keys(problems).length) problems._ = err.message;
      for (const [loc, msg] of Object.entries(problems)) {
        const slot = document.getElementById("err-" + (prefix || "") + loc.split(".")[0]) ||
          form.querySelector(".form-error") || form.querySelector(".field-error");
        slot.textContent = msg;
      }
    }

    function clearErrors(form) {
      for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
    }

    function reveal(id, secret) {
      document.getElementById(id + "-value").textContent = secret;
      document.getElementById(id).hidden = false;
    }

    // ------------------------------------------------------------------- tokens

    const tokenForm = document.getElementById("token-form");

    function tokenRow(t) {
      return el("tr", { dataset: { tokenId: t.id }, class: t.revoked_at ? "disabled" : null },
        el("td", { class: "num", text: String(t.id) }),
        el("td", { text: t.name || "–" }),
        el("td", { class: "mono", text: t.prefix + "…" }),
        el("td", {}, el("time", { datetime: t.created_at, text: formatTime(t.created_at) })),
        el("td", { text: t.revoked_at ? "revoked " + formatTime(t.revoked_at) : "active" }),
        el("td", { class: "actions" }, t.revoked_at ? null :
          el("button", { type: "button", class: "danger revoke-token", dataset: { tokenId: t.id }, text: "Revoke" })));
    }

    async function refreshTokens() {
      const tokens = await fetchJSON(base + "/tokens");
      document.getElementById("tokens-rows").replaceChildren(...tokens.map(tokenRow));
      document.getElementById("tokens-table").hidden = tokens.length === 0;
    }

    tokenForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const created = await fetchJSON(base + "/tokens", { method: "POST", json: { name: tokenForm.elements.name.value.trim() } });
        clearErrors(tokenForm);
        tokenForm.reset();
        reveal("token-secret", created.token);
        await refreshTokens();
      } catch (err) {
        showErrors(tokenForm, err, "token-");
      }
    });

    document.getElementById("tokens-table").addEventListener("click", async (ev) => {
      const button = ev.target.closest(".revoke-token");
      if (!button || !window.confirm("Revoke this token? Scripts using it can no longer send.")) return;
      await fetchJSON(base + "/tokens/" + button.dataset.tokenId, { method: "DELETE" });
      await refreshTokens();
    });

    // ----------------------------------------------------------------- webhooks

    const hookForm = document.getElementById("webhook-form");
    const output = document.getElementById("webhook-output");

    function show(title, ...body) {
      document.getElementById("webhook-output-title").textContent = title;
      document.getElementById("webhook-output-body").replaceChildren(...body);
      output.hidden = false;
    }

    function hookRow(w) {
      const button = (cls, text, extra) => el("button", Object.assign({ type: "button", class: cls, dataset: { webhookId: w.id }, text }, extra || {}));
      const toggle = button("secondary toggle-webhook", w.enabled ? "Disable" : "Enable");
      toggle.dataset.enabled = String(w.enabled);
      return el("tr", { dataset: { webhookId: w.id }, class: w.enabled ? null : "disabled" },
        el("td", { text: w.name || "–" }), el("td", { class: "mono url", text: w.url }),
        el("td", { text: w.format }), el("td", { text: w.severities.join(", ") }),
        el("td", { class: "mono", text: w.secret_hint }),
        el("td", { text: w.enabled ? "enabled" : "disabled" }),
        el("td", { class: "actions" }, button("secondary test-webhook", "Send test"), " ",
          button("secondary show-deliveries", "Deliveries"), " ", toggle, " ",
          button("danger delete-webhook", "Delete")));
    }

    async function refreshHooks() {
      const hooks = await fetchJSON(base + "/webhooks");
      document.getElementById("webhooks-rows").replaceChildren(...hooks.map(hookRow));
      document.getElementById("webhooks-table").hidden = hooks.length === 0;
    }

    hookForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const severities = [...hookForm.querySelectorAll("input[name=severities]:checked")].map((b) => b.value);
      const body = {
        name: hookForm.elements.name.value.trim(),
        url: hookForm.elements.url.value.trim(),
        format: hookForm.elements.format.value,
        severities,
      };
      if (hookForm.elements.routing_key.value.trim()) body.routing_key = hookForm.elements.routing_key.value.trim();
      try {
        const created = await fetchJSON(base + "/webhooks", { method: "POST", json: body });
        clearErrors(hookForm);
        hookForm.elements.url.value = "";
        hookForm.elements.name.value = "";
        reveal("webhook-secret", created.secret);
        await refreshHooks();
      } catch (err) {
        showErrors(hookForm, err);
      }
    });

    document.getElementById("webhooks-table").addEventListener("click", async (ev) => {
      const button = ev.target.closest("button");
      if (!button) return;
      const url = base + "/webhooks/" + button.dataset.webhookId;
      try {
        if (button.classList.contains("test-webhook")) {
          show("Sending a test event…");
          const r = await fetchJSON(url + "/test", { method: "POST" });
          const head = r.ok ? "ok: " : "failed: ";
          const status = r.status_code === null ? "no answer" : "HTTP " + r.status_code;
          const latency = r.latency_ms === null ? "" : " in " + Math.round(r.latency_ms) + " ms";
          show(head + status + latency + (r.error ? ": " + r.error : ""),
            el("p", { class: "muted", text: "What the receiver answered:" }),
            el("pre", { class: "receiver-body", text: r.response_body || "(empty body)" }));
          output.className = "webhook-output " + (r.ok ? "ok" : "failed");
        } else if (button.classList.contains("show-deliveries")) {
          const log = await fetchJSON(url + "/deliveries");
          output.className = "webhook-output";
          show("Delivery log of webhook " + button.dataset.webhookId, log.length ? deliveries(log) : el("p", { class: "muted", text: "Nothing delivered yet." }));
        } else if (button.classList.contains("toggle-webhook")) {
          await fetchJSON(url, { method: "PUT", json: { enabled: button.dataset.enabled !== "true" } });
          await refreshHooks();
        } else if (button.classList.contains("delete-webhook")) {
          if (!window.confirm("Delete this webhook with its delivery log?")) return;
          await fetchJSON(url, { method: "DELETE" });
          await refreshHooks();
        }
      } catch (err) {
        show("Failed: " + err.message);
      }
    });

    function deliveries(log) {
      // one row per notification: a group of events (by run and family by default) or a test send
      const group = (d) => Object.entries(d.group).filter(([k]) => k !== "status" && k !== "run").map(([k, v]) => k + " " + v).join(", ");
      const head = el("tr", {}, ...["Notification", "Events", "Group", "Status", "Attempts", "Last answer", "Latency", "Error", "Created"].map((t) => el("th", { scope: "col", text: t })));
      return el("div", { class: "table-scroll" }, el("table", { class: "grid compact" }, el("thead", {}, head),
        el("tbody", {}, ...log.map((d) => el("tr", {},
          el("td", { text: d.test ? "test" : d.event_status }),
          el("td", { class: "num", text: d.test ? "–" : String(d.event_ids.length) }),
          el("td", { text: d.test ? "" : group(d) }), el("td", { text: d.status }),
          el("td", { class: "num", text: String(d.attempts) }),
          el("td", { class: "num", text: d.last_status_code === null ? "–" : String(d.last_status_code) }),
          el("td", { class: "num", text: d.last_latency_ms === null ? "–" : Math.round(d.last_latency_ms) + " ms" }),
          el("td", { text: d.last_error || "" }),
          el("td", {}, el("time", { datetime: d.created_at, text: formatTime(d.created_at) })))))));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("cw-settings-data");
    if (data) initSettings(JSON.parse(data.textContent));
  });
})();
