// gpuhub GPU monitor dashboard: plain DOM, no framework. Reads the monitor's own API with the
// browser's hub login (cookie), every few seconds; text from the API is only ever set with
// textContent, never as HTML (user and device names are data, not markup).
"use strict";
(function () {
  const root = document.getElementById("gpuhub-dashboard");
  const base = root.dataset.base;
  const admin = root.dataset.admin === "true";
  let historyWindow = "hour";

  async function getJSON(path) {
    const r = await fetch(base + path, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-XSRFToken": root.dataset.xsrf },
    });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return node;
  }
  const pct = (x) => (x == null ? "–" : Math.round(x * 100) + " %");
  const gib = (x) => (x == null ? "–" : (x / 2 ** 30).toFixed(1) + " GiB");
  const num = (x, unit) => (x == null ? "–" : Math.round(x) + " " + unit);
  function duration(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
    return h ? h + " h " + m + " min" : m + " min";
  }
  function bar(ratio) {
    const outer = el("span", { class: "bar", title: pct(ratio) });
    const inner = el("span", { class: "fill" });
    inner.style.width = (ratio == null ? 0 : Math.min(1, ratio) * 100) + "%";
    outer.append(inner);
    return el("span", {}, outer, " ", pct(ratio));
  }
  function status(text, error) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = error ? "error" : "";
  }

  async function refreshDevices() {
    const data = await getJSON("api/devices");
    const holders = {};
    if (admin) {
      const list = await getJSON("api/allocations");
      const body = document.getElementById("allocations-body");
      body.replaceChildren();
      const now = Date.now() / 1000;
      for (const a of list.allocations) {
        const who = a.server ? a.user + "/" + a.server : a.user;
        for (const d of a.devices) (holders[d.uuid] = holders[d.uuid] || []).push(who);
        const busy = a.sampled_seconds > 0 ? a.busy_seconds / a.sampled_seconds : null;
        body.append(el("tr", { "data-allocation": a.id },
          el("td", {}, who), el("td", {}, a.profile),
          el("td", {}, a.devices.map((d) => d.name || d.uuid).join(", ")),
          el("td", {}, new Date(a.created_at * 1000).toLocaleString()),
          el("td", {}, duration(now - a.created_at)), el("td", {}, pct(busy))));
      }
      document.getElementById("allocations-empty").hidden = list.allocations.length > 0;
    }
    const nodeState = {};
    const nodesBody = document.getElementById("nodes-body");
    nodesBody.replaceChildren();
    for (const n of data.nodes) {
      nodeState[n.id] = n.state;
      const name = n.id + (n.hostname && n.hostname !== n.id ? " (" + n.hostname + ")" : "");
      const labels = Object.keys(n.labels).sort().map((k) => (n.labels[k] ? k + "=" + n.labels[k] : k)).join(", ");
      nodesBody.append(el("tr", { "data-node": n.id, "data-state": n.state },
        el("td", {}, name), el("td", { class: "state" }, n.state + (n.reason ? ": " + n.reason : "")),
        el("td", {}, labels), el("td", {}, n.free + " of " + n.total)));
    }
    const body = document.getElementById("devices-body");
    body.replaceChildren();
    for (const d of data.devices) {
      // as dashboard.py's device_state
      const node = nodeState[d.node] || "no-agent";
      const state = d.mine ? "yours" : d.free ? "free" : !d.allocatable ? "split (MIG)" :
        node !== "up" && !d.holders ? "node " + node : "in use";
      const memory = d.memory_used_bytes == null ? "–" :
        gib(d.memory_used_bytes) + (d.memory_total_bytes ? " / " + gib(d.memory_total_bytes) : "");
      const row = el("tr", { "data-uuid": d.uuid, "data-state": state },
        el("td", {}, d.index), el("td", {}, d.name), el("td", { class: "state" }, state),
        el("td", {}, bar(d.utilization_ratio)), el("td", {}, memory),
        el("td", {}, num(d.temperature_celsius, "°C")), el("td", {}, num(d.power_watts, "W")));
      if (admin) row.append(el("td", {}, (holders[d.uuid] || []).join(", ")));
      body.append(row);
    }
    document.getElementById("summary").textContent =
      data.free + " of " + data.total + " device(s) free · backend " + data.host.backend +
      (data.host.driver_version ? " · driver " + data.host.driver_version + " (CUDA " + data.host.cuda_driver_version + ")" : "");
    status("Updated " + new Date().toLocaleTimeString());
    return data;
  }

  function chart(points, pick, max) {
    const w = 320, h = 64, ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("class", "chart");
    const span = historyWindow === "day" ? 86400 : 3600, now = Date.now() / 1000;
    const coords = points.filter((p) => pick(p) != null).map((p) =>
      ((p[0] - (now - span)) / span * w).toFixed(1) + "," + (h - Math.min(1, pick(p) / max) * (h - 2) - 1).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
    return svg;
  }

  async function refreshHistory(devices) {
    const data = await getJSON("api/history?window=" + historyWindow);
    const charts = document.getElementById("charts");
    charts.replaceChildren();
    for (const d of devices) {
      const points = data.devices[d.uuid] || [];
      const memMax = d.memory_total_bytes || Math.max(1, ...points.map((p) => p[2] || 0));
      charts.append(el("figure", { "data-uuid": d.uuid },
        el("figcaption", {}, d.index + ": " + d.name + " (" + points.length + " min)"),
        el("div", { class: "label" }, "utilisation"), chart(points, (p) => p[1], 1),
        el("div", { class: "label" }, "memory"), chart(points, (p) => p[2], memMax)));
    }
  }

  async function accounting(event) {
    if (event) event.preventDefault();
    const form = document.getElementById("accounting-form");
    const params = new URLSearchParams();
    if (form.start.value) params.set("start", form.start.value);
    if (form.end.value) params.set("end", form.end.value);
    params.set("by", form.by.value);
    // a link is a navigation: the cookie is enough, no XSRF header needed
    document.getElementById("accounting-csv").href = base + "api/accounting?" + params + "&format=csv";
    const data = await getJSON("api/accounting?" + params);
    const body = document.getElementById("accounting-body");
    body.replaceChildren();
    const f = (x) => x.toFixed(2);
    for (const r of data.rows) {
      body.append(el("tr", {}, el("td", {}, r.name), el("td", {}, r.allocations), el("td", {}, f(r.gpu_hours)),
        el("td", {}, f(r.busy_hours)), el("td", {}, f(r.idle_hours)), el("td", {}, f(r.unsampled_hours))));
    }
    document.getElementById("accounting-period").textContent =
      new Date(data.start * 1000).toLocaleString() + " – " + new Date(data.end * 1000).toLocaleString();
  }

  let devices = [];
  async function tick() {
    try { devices = (await refreshDevices()).devices; } catch (e) { status("Could not update: " + e.message, true); }
  }
  async function history() {
    try { await refreshHistory(devices); } catch (e) { status("Could not load history: " + e.message, true); }
  }
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      historyWindow = button.dataset.window;
      for (const b of document.querySelectorAll("[data-window]")) b.setAttribute("aria-pressed", b === button);
      history();
    });
  }
  if (admin) {
    document.getElementById("accounting-form").addEventListener("submit", (e) => accounting(e).catch((err) => status(err.message, true)));
    accounting().catch((err) => status(err.message, true));
  }
  tick().then(history);
  setInterval(tick, 5000);
  setInterval(history, 60000);
})();
