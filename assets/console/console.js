// The clawgate console: reads the admin API (with the token the operator gives once, kept for
// the browser tab) and draws it. No framework, one vendored charting library (uPlot).
"use strict";

const state = { token: sessionStorage.getItem("clawgate-token") || "", page: "overview", timer: null, charts: {}, tail: null };

function $(id) { return document.getElementById(id); }

function text(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number" && digits !== undefined) return v.toFixed(digits);
  return String(v);
}

function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %"; }

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbody, items, columns) {
  tbody.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const [value, cls] of columns(item)) cell(tr, value, cls);
    tbody.appendChild(tr);
  }
}

async function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { askToken(); throw new Error("unauthorised"); }
  return r;
}

async function json(path) { return (await api(path)).json(); }

function askToken(message) {
  stop();
  $("login").hidden = false;
  document.querySelector("main").hidden = true;
  $("login-error").textContent = state.token ? (message || "That token was refused.") : "";
}

// Whether the token at hand opens the API (asked without a 401).
async function session() {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  return (await fetch("/api/session", { headers })).json();
}

async function begin() {
  const s = await session();
  if (!s.authorised) { askToken(); return; }
  $("login").hidden = true;
  document.querySelector("main").hidden = false;
  show(location.hash.slice(1) || state.page);
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("clawgate-token", state.token);
  begin();
});

// Charts --------------------------------------------------------------------------------------

function chart(id, series) {
  if (state.charts[id]) return state.charts[id];
  const el = $(id);
  const opts = {
    width: Math.max(300, el.clientWidth || 480),
    height: 180,
    legend: { show: true },
    scales: { x: { time: true } },
    series: [{}].concat(series.map((s) => ({ label: s[0], stroke: s[1], width: 1.5, points: { show: false } }))),
    axes: [{}, { size: 50 }],
  };
  state.charts[id] = new uPlot(opts, [[]].concat(series.map(() => [])), el);
  return state.charts[id];
}

function draw(series) {
  const at = series.map((s) => s.at);
  chart("c-rate", [["requests/s", "#3b6fd8"], ["errors/s", "#c23b31"]])
    .setData([at, series.map((s) => s.requests), series.map((s) => s.errors)]);
  chart("c-latency", [["p50", "#1f8a4c"], ["p95", "#d89b3b"], ["p99", "#c23b31"]])
    .setData([at, series.map((s) => s.p50), series.map((s) => s.p95), series.map((s) => s.p99)]);
  chart("c-tokens", [["tokens/s", "#7a4fd8"]]).setData([at, series.map((s) => s.tokens)]);
  const rate = series.map((s) => (s.cache_hits + s.cache_misses ? s.cache_hits / (s.cache_hits + s.cache_misses) : null));
  chart("c-cache", [["hit rate", "#1f8a4c"]]).setData([at, rate]);
}

// Pages ---------------------------------------------------------------------------------------

const pages = {
  async overview() {
    const o = await json("/api/overview");
    $("gateway").textContent = o.name + " · version " + o.version + " · up " + o.uptime_seconds + " s";
    const m = o.last_minute;
    $("t-rps").textContent = text(m.requests_per_second, 1);
    $("t-errors").textContent = pct(o.error_rate);
    $("t-latency").textContent = [o.latency_ms.p50, o.latency_ms.p95, o.latency_ms.p99].map((v) => text(v, 1)).join(" / ") + " ms";
    $("t-tokens").textContent = text(m.tokens_per_minute, 0);
    $("t-cache").textContent = pct(o.cache.hit_rate);
    $("t-requests").textContent = text(o.requests);
    draw(o.series);
  },

  async agents() {
    const a = await json("/api/agents");
    fill($("agents-rows"), a.agents, (x) => [
      [x.id],
      [(x.keys || []).join(", ") || "–"],
      [x.rate_limit ? x.rate_limit.burst + " / " + text(x.rate_limit.per_minute, 0) + " per min" : "–"],
      [text(x.limit_left), "num"],
      [text(x.requests || 0), "num"],
      [text(x.errors || 0), "num"],
      [text(x.refused || 0), "num"],
      [text(x.tokens || 0), "num"],
      [Object.entries(x.tokens_by_model || {}).map(([m, n]) => m + ": " + n).join(", ") || "–"],
    ]);
  },

  async routes() {
    const r = await json("/api/routes");
    fill($("routes-rows"), r.routes, (x) => [
      [x.label], [x.protocol], [x.backends], [x.auth_required ? "yes" : "no"],
      [x.semantic_cache ? "semantic" : x.cache ? "yes" : "no"],
      [text(x.requests), "num"], [text(x.errors || 0), "num"], [text(x.refused || 0), "num"],
      [text(x.mean_ms, 2), "num"],
    ]);
  },

  async backends() {
    const b = await json("/api/backends");
    const tbody = $("backends-rows");
    tbody.replaceChildren();
    for (const x of b.backends) {
      const tr = document.createElement("tr");
      cell(tr, x.name);
      const addrs = cell(tr, "");
      for (const a of x.addresses) {
        const span = document.createElement("div");
        span.className = a.up ? "up" : "down";
        span.textContent = a.address + (a.up ? " up" : " down");
        addrs.appendChild(span);
      }
      cell(tr, x.up + " of " + x.addresses.length, "num");
      cell(tr, text(x.ejections), "num");
      cell(tr, text(x.breaker), x.breaker === "open" ? "down" : "");
      cell(tr, text(x.breaker_opens), "num");
      tbody.appendChild(tr);
    }
  },

  async cache() {
    const c = await json("/api/cache");
    $("k-store").textContent = c.enabled ? c.store : "off";
    $("k-bytes").textContent = bytes(c.bytes);
    $("k-rate").textContent = pct(c.hit_rate);
    $("k-hits").textContent = c.hits + " / " + c.misses;
    $("k-evictions").textContent = text(c.evictions);
    const tbody = $("cache-rows");
    if (tbody.dataset.routes === JSON.stringify(c.routes)) return;
    tbody.dataset.routes = JSON.stringify(c.routes);
    tbody.replaceChildren();
    for (const label of c.routes) {
      const tr = document.createElement("tr");
      cell(tr, label);
      const button = document.createElement("button");
      button.textContent = "Purge";
      button.dataset.route = label;
      button.addEventListener("click", () => purge(label, button));
      cell(tr, "").appendChild(button);
      tbody.appendChild(tr);
    }
  },

  tail() { startTail(); },
};

async function purge(label, button) {
  if (!confirm("Purge every cached answer of route " + label + "?")) return;
  button.disabled = true;
  try {
    const r = await api("/api/cache/purge", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ route: label }),
    });
    const body = await r.json();
    $("purge-result").textContent = r.ok ? "Purged " + label + "." : "Not purged: " + body.message;
    $("purge-result").className = r.ok ? "up" : "bad";
  } finally {
    button.disabled = false;
  }
}

// The tail: SSE read with fetch (EventSource cannot send the token).
async function startTail() {
  if (state.tail) return;
  const controller = new AbortController();
  state.tail = controller;
  try {
    const r = await api("/api/tail", { signal: controller.signal });
    $("tail-state").textContent = "Following: new lines appear as requests finish.";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (event.startsWith("event: skipped")) addSkipped(Number(data));
        else if (data) addLine(data);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") console.warn("tail ended:", e.message);
  } finally {
    if (state.tail === controller) state.tail = null;
    $("tail-state").textContent = "Stopped.";
  }
}

// Lines the gateway did not send (more than 400 a second): counted above the list.
function addSkipped(n) {
  state.skipped = (state.skipped || 0) + (n || 0);
  $("tail-skipped").textContent = state.skipped + " lines not shown (the tail shows at most 400 a second)";
}

// One access-log line, as a row: when, status, method, path, route, agent, time, tokens, id;
// the whole line on hover.
function addLine(data) {
  const list = $("tail-lines");
  const li = document.createElement("li");
  let v = null;
  try { v = JSON.parse(data); } catch (e) { v = null; }
  if (v && v.type === "access") {
    const parts = [
      (v.time || "").slice(11, 23), v.status, v.method, v.path, v.route, v.agent_id || "-",
      text(v.duration_ms, 1) + " ms", v.cache || "", v.tokens ? v.tokens.total + " tokens" : "", v.request_id,
    ];
    li.textContent = parts.filter((p) => p !== "").join("  ");
    li.title = data;
    if (v.status >= 500) li.className = "bad";
  } else {
    li.textContent = data;
  }
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 200) list.removeChild(list.lastChild);
}

function stop() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

async function refresh() {
  try {
    await pages[state.page]();
  } catch (e) {
    if (e.message !== "unauthorised") console.warn("refresh failed:", e.message);
  }
}

function show(page) {
  if (!pages[page]) page = "overview";
  state.page = page;
  for (const s of document.querySelectorAll(".page")) s.classList.toggle("shown", s.id === page);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (page !== "tail" && state.tail) { state.tail.abort(); state.tail = null; }
  stop();
  refresh();
  if (page !== "tail") state.timer = setInterval(refresh, 1000);
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
begin();
