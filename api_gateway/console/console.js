// The INFaaS console: every page polls the gateway's JSON API with the key typed into the
// header (kept in sessionStorage) and draws tables, and charts with charts.js. No build step.
"use strict";

const POLL_MS = 1500;
const KEY = "infaas.key";
const MINE = "infaas.registrations"; // registrations started from this tab

// -- helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(x, digits) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %");
function usd(x) {
  if (x === null || x === undefined) return "–";
  const v = Number(x);
  // a query costs fractions of a cent: three significant digits, not four decimals
  return "$" + (v !== 0 && Math.abs(v) < 0.01 ? v.toPrecision(3) : v.toFixed(4));
}

function banner(text) {
  const node = document.getElementById("banner");
  node.hidden = !text;
  node.textContent = text || "";
}

function notice(text, bad) {
  const node = document.getElementById("notice");
  node.hidden = !text;
  node.className = bad ? "bad" : "";
  node.textContent = text || "";
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  const key = sessionStorage.getItem(KEY);
  if (key) opts.headers.Authorization = "Bearer " + key;
  const response = await fetch(path, opts);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || response.statusText);
  }
  return body;
}

function explain(error) {
  if (error.status === 401) return error.message + " — type an API key in the box above.";
  if (error.status === 403) return error.message;
  return error.message || String(error);
}

// Poll `fn` every POLL_MS while the tab is visible; errors go to the banner, not the
// console. Returns a function that polls at once (after a click), never two at a time.
function every(fn) {
  let timer = null, running = false, again = false;
  async function tick() {
    clearTimeout(timer);
    if (running) { again = true; return; }
    running = true;
    try {
      await fn();
      banner("");
      document.getElementById("updated").textContent =
        "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      banner(explain(error));
    }
    running = false;
    if (again) { again = false; tick(); return; }
    timer = setTimeout(tick, document.hidden ? 5 * POLL_MS : POLL_MS);
  }
  tick();
  return tick;
}

function table(columns, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.cls }, c.title)))),
    el("tbody", {}, rows.map((row) => el("tr", row.attrs || {}, columns.map((c) => {
      const value = c.cell(row.data);
      return el("td", { class: c.cls, "data-field": c.field }, value);
    })))));
}

// Pager under a table: meta = {page, pages, total}; go(page) shows another page.
function pager(meta, go, what) {
  return el("div", { class: "pager" },
    el("button", { disabled: meta.page <= 1, onclick: () => go(meta.page - 1) }, "‹ previous"),
    ` page ${meta.page} of ${meta.pages} (${meta.total} ${what}) `,
    el("button", { disabled: meta.page >= meta.pages, onclick: () => go(meta.page + 1) },
      "next ›"));
}

function pageOf(rows, page, perPage) {
  const pages = Math.max(1, Math.ceil(rows.length / perPage));
  const number = Math.min(Math.max(1, page), pages);
  return { rows: rows.slice((number - 1) * perPage, number * perPage),
    meta: { page: number, pages, total: rows.length } };
}

function replace(id, ...nodes) {
  const node = document.getElementById(id);
  if (node) node.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function bar(done, total) {
  const share = total ? Math.min(1, done / total) : 0;
  return el("span", { title: `${done} of ${total}` }, el("span", { class: "bar" },
    el("span", { style: `width:${(100 * share).toFixed(1)}%` })), ` ${done}/${total}`);
}

// -- overview --------------------------------------------------------------------------

function overviewPage(main) {
  let appsPage = 1, workersPage = 1, filter = "";
  main.replaceChildren(
    el("section", {}, el("h2", {}, "Apps"), el("div", { id: "totals", class: "muted" }),
      el("input", { id: "app-filter", type: "search", placeholder: "filter apps",
        oninput: (e) => { filter = e.target.value; appsPage = 1; poll(); } }),
      el("div", { id: "apps" })),
    el("section", {}, el("h2", {}, "Workers"), el("div", { id: "hardware" }),
      el("div", { id: "workers" })));
  const appCols = [
    { title: "app", field: "app", cell: (a) => el("a", { href: `/ui/apps/${encodeURIComponent(a.app)}` }, a.app) },
    { title: "q/s", field: "qps", cls: "n", cell: (a) => num(a.live.qps, 1) },
    { title: "p99 ms", field: "p99_ms", cls: "n", cell: (a) => {
      const obj = a.objective.latency_ms;
      const late = obj !== null && a.live.p99_ms !== null && a.live.p99_ms > obj;
      return el("span", { class: late ? "bad" : "" }, num(a.live.p99_ms, 2));
    } },
    { title: "objective ms", field: "objective", cls: "n", cell: (a) => num(a.objective.latency_ms, 1) },
    { title: "misses", field: "misses", cls: "n",
      cell: (a) => `${a.live.slo_misses} (${pct(a.live.slo_miss_rate)})` },
    { title: "accuracy", field: "accuracy", cls: "n", cell: (a) => num(a.live.mean_accuracy, 3) },
    { title: "floor", field: "floor", cls: "n", cell: (a) => num(a.objective.min_accuracy, 3) },
    { title: "$/hour", field: "cost_per_hour", cls: "n", cell: (a) => usd(a.cost_per_hour_usd) },
    { title: "$/1k q", field: "cost_per_1000", cls: "n", cell: (a) => usd(a.live.cost_per_1000_queries_usd) },
    { title: "variants running/ready/all", field: "variants", cls: "n",
      cell: (a) => `${a.running_variants}/${a.ready_variants}/${a.variants}` },
    { title: "replicas", field: "replicas", cls: "n", cell: (a) => a.replicas },
  ];
  const workerCols = [
    { title: "worker", field: "worker", cell: (w) => w.worker },
    { title: "hardware", field: "hardware", cell: (w) => w.hardware },
    { title: "host", field: "host", cell: (w) => w.host },
    { title: "cores", field: "cores", cls: "n", cell: (w) => w.cores },
    { title: "CPU", field: "cpu", cls: "n", cell: (w) => pct(w.cpu_util) },
    { title: "GPU", field: "gpu", cls: "n", cell: (w) => (w.hardware === "cpu" ? "–" : pct(w.gpu_util)) },
    { title: "memory MB", field: "memory", cls: "n", cell: (w) => num(w.memory_mb, 0) },
    { title: "holds", field: "holds", cell: (w) => el("ul", { class: "holds" }, w.holds.map((v) =>
      el("li", {}, `${v.variant} ×${v.replicas} ${v.state}, ${num(v.qps, 1)} q/s, busy ${pct(v.busy)}`)),
    w.others_replicas ? el("li", { class: "muted" }, `and ${w.others_replicas} replicas of other tenants`) : null) },
  ];
  const poll = every(async () => {
    const q = new URLSearchParams({ page: appsPage, per_page: 25, workers_page: workersPage,
      workers_per_page: 25, filter });
    const view = await api(`/v1/console/overview?${q}`);
    const t = view.totals;
    replace("totals", `${t.apps} apps, ${t.models} models, ${t.variants} variants, ${t.workers} workers`);
    replace("apps", table(appCols, view.apps.map((a) => ({ data: a, attrs: { "data-app": a.app } }))),
      pager(view.apps_page, (p) => { appsPage = p; poll(); }, "apps"));
    replace("hardware", el("p", {}, view.hardware.map((k) => el("span", { class: "chip" },
      `${k.hardware}: ${k.workers} workers, CPU ${pct(k.mean_cpu_util)}` +
      (k.hardware === "cpu" ? "" : `, GPU ${pct(k.mean_gpu_util)}`) + `, ${k.replicas} replicas`))));
    replace("workers", table(workerCols, view.workers.map((w) => ({ data: w }))),
      pager(view.workers_page, (p) => { workersPage = p; poll(); }, "workers"));
  });
}

// -- one app ---------------------------------------------------------------------------

function appPage(main, app) {
  const base = `/v1/apps/${encodeURIComponent(app)}`;
  let variantsPage = 1;
  const spans = { "5 min": 300, "15 min": 900, "1 hour": 3600 };
  let spanS = Number(new URLSearchParams(location.search).get("span_s")) || 3600;
  const hist = { ts: [], spans: [], qps: [], p50: [], p99: [], mix: {}, newest: null };
  main.replaceChildren(el("h2", {}, app), el("div", { id: "stats", class: "muted" }),
    el("p", { id: "spans" }, "charts over the last ", Object.entries(spans).map(([name, s]) =>
      el("button", { "data-span": s, onclick: () => { spanS = s; poll(); } }, name))),
    el("div", { class: "charts" }, el("div", { id: "chart-load" }), el("div", { id: "chart-latency" }),
      el("div", { id: "chart-mix" })),
    el("section", {}, el("h2", {}, "Models"), el("div", { id: "models" }),
      el("p", {}, el("a", { href: `/ui/registrations?app=${encodeURIComponent(app)}` }, "Register a model…"))),
    el("section", {}, el("h2", {}, "Variants"), el("div", { id: "variants" })));
  async function remove(model) {
    if (!window.confirm(`Delete model ${model} and all its variants?`)) return;
    try {
      await api(`${base}/models/${encodeURIComponent(model)}`, { method: "DELETE" });
      notice(`deleted ${model}`);
      poll();
    } catch (error) { notice(explain(error), true); }
  }
  const modelCols = [
    { title: "model", field: "id", cell: (m) => m.id },
    { title: "format", field: "format", cell: (m) => m.format },
    { title: "status", field: "status", cell: (m) => m.status },
    { title: "", field: "delete", cell: (m) => el("button", { class: "danger", "data-delete": m.id,
      onclick: () => remove(m.id) }, "delete") },
  ];
  const variantCols = (served) => [
    { title: "variant", field: "id", cell: (v) => v.id },
    { title: "hardware", field: "hardware", cell: (v) => `${v.hardware} t${v.threads}` },
    { title: "precision", field: "precision", cell: (v) => v.precision },
    { title: "status", field: "status", cell: (v) => v.status + (v.error ? `: ${v.error}` : "") },
    { title: "state", field: "state", cell: (v) => v.state },
    { title: "replicas", field: "replicas", cell: (v) => v.replicas.map((r) => `${r.worker} ×${r.replicas}`).join(", ") || "–" },
    { title: "accuracy", field: "accuracy", cls: "n", cell: (v) => num(v.accuracy, 3) },
    { title: "latency ms per batch size", field: "latency_ms", cell: (v) => Object.entries(v.latency_ms)
      .map(([b, ms]) => el("span", { class: "lat", "data-batch": b }, `${b}: ${num(ms, 3)}`)) },
    { title: "$/hour", field: "cost_per_hour", cls: "n", cell: (v) => num(v.cost_per_hour, 4) },
    { title: "queries served", field: "served", cls: "n", cell: (v) => (served[v.id] || {}).queries || 0 },
  ];
  async function refreshHistory() {
    const since = hist.newest === null ? "" : `?since_s=${hist.newest}`;
    const got = await api(`/v1/console/apps/${encodeURIComponent(app)}/history${since}`);
    const p = got.points;
    const old = hist.ts.length;
    for (const name of Object.keys(p.mix)) if (!hist.mix[name]) hist.mix[name] = new Array(old).fill(0);
    p.t_s.forEach((t, i) => {
      hist.ts.push(t); hist.spans.push(p.span_s[i]); hist.qps.push(p.qps[i]);
      hist.p50.push(p.p50_ms[i]); hist.p99.push(p.p99_ms[i]);
      for (const name of Object.keys(hist.mix)) hist.mix[name].push(p.mix[name] ? p.mix[name][i] : 0);
    });
    if (p.t_s.length) hist.newest = p.t_s[p.t_s.length - 1];
    const cut = hist.ts.findIndex((t) => t > Date.now() / 1000 - 3600);
    if (cut > 0) for (const a of [hist.ts, hist.spans, hist.qps, hist.p50, hist.p99, ...Object.values(hist.mix)]) a.splice(0, cut);
  }
  const poll = every(async () => {
    const [view, stats] = await Promise.all([api(base), api(`${base}/stats`), refreshHistory()]);
    const nowS = Math.floor(Date.now() / 1000);
    const opts = { nowS, spanS, gap: 0, spans: hist.spans };
    for (const b of document.querySelectorAll("#spans button")) b.classList.toggle("here", Number(b.dataset.span) === spanS);
    lineChart("chart-load", hist.ts, [{ name: "queries/s", values: hist.qps }], { ...opts, title: "Load (q/s)" });
    lineChart("chart-latency", hist.ts, [{ name: "p50 ms", values: hist.p50 }, { name: "p99 ms", values: hist.p99 }],
      { nowS, spanS, spans: hist.spans, title: "Achieved latency (ms)" });
    lineChart("chart-mix", hist.ts, Object.entries(hist.mix).map(([name, values]) => ({ name, values })),
      { ...opts, title: "Variant mix (q/s per variant)" });
    replace("stats", `${stats.queries} queries answered, p50 ${num(stats.p50_ms, 2)} ms, ` +
      `p99 ${num(stats.p99_ms, 2)} ms, SLO misses ${pct(stats.slo_miss_rate)}, accuracy delivered ` +
      `${num(stats.mean_accuracy, 3)}, cost ${usd(stats.cost_usd)} (${usd(stats.cost_per_1000_queries_usd)} per 1,000)`);
    replace("models", table(modelCols, view.models.map((m) => ({ data: m, attrs: { "data-model": m.id } }))));
    const shown = pageOf(view.variants, variantsPage, 25);
    replace("variants", table(variantCols(stats.variants || {}),
      shown.rows.map((v) => ({ data: v, attrs: { "data-variant": v.id } })), { id: "variants-table" }),
    pager(shown.meta, (p) => { variantsPage = p; poll(); }, "variants"));
  });
}

// -- scaler ----------------------------------------------------------------------------

function scalerPage(main) {
  const seen = []; // the plans this page saw, newest last (by tick)
  main.replaceChildren(el("div", { id: "plan" }), el("div", { class: "charts" }, el("div", { id: "chart-solve" })),
    el("section", {}, el("h2", {}, "Actions, with their reasons"), el("div", { id: "actions" })),
    el("section", {}, el("h2", {}, "Demand per requirement class"), el("div", { id: "demand" })),
    el("section", {}, el("h2", {}, "Targets"), el("div", { id: "targets" })),
    el("section", {}, el("h2", {}, "Last plans"), el("div", { id: "plans" })));
  let targetsPage = 1;
  const poll = every(async () => {
    const got = await api("/v1/console/scaler");
    const plan = got.plan;
    if (!plan) { replace("plan", el("p", { class: "muted" }, got.message)); return; }
    if (!seen.length || seen[seen.length - 1].tick !== plan.tick) seen.push(plan);
    if (seen.length > 60) seen.shift();
    replace("plan", el("p", {}, `tick ${plan.tick} · ${new Date(plan.now_ms).toLocaleTimeString()} · policy ${plan.policy} · ` +
      `planner ${plan.planner} (${plan.status}) · solve ${num(plan.solve_ms, 1)} ms · tick ${num(plan.tick_ms, 1)} ms · ` +
      `read ${num(plan.read_ms, 1)} ms · ${usd(plan.cost_per_hour)}/hour · actuator ${plan.actuator || "–"}`),
    plan.notes.length ? el("ul", {}, plan.notes.map((n) => el("li", {}, n))) : null);
    lineChart("chart-solve", seen.map((p) => p.now_ms / 1000), [{ name: "solve ms", values: seen.map((p) => p.solve_ms) }],
      { nowS: Date.now() / 1000, spanS: 120, title: "Solve time (ms), last 2 minutes seen" });
    replace("actions", plan.actions.length ? table([
      { title: "kind", field: "kind", cell: (a) => a.kind },
      { title: "variant", field: "variant", cell: (a) => a.variant || "–" },
      { title: "worker / hardware", field: "worker", cell: (a) => a.worker || a.hardware || "–" },
      { title: "replicas", field: "replicas", cls: "n", cell: (a) => a.replicas ?? "–" },
      { title: "reason", field: "reason", cell: (a) => a.reason },
    ], plan.actions.map((a) => ({ data: a }))) : el("p", { class: "muted" }, "no actions in this plan"));
    replace("demand", table([
      { title: "class", field: "key", cell: (d) => d.key },
      { title: "measured q/s", field: "measured", cls: "n", cell: (d) => num(d.measured_qps, 2) },
      { title: "estimate", field: "estimate", cls: "n", cell: (d) => num(d.estimate_qps, 2) },
      { title: "planned", field: "planned", cls: "n", cell: (d) => num(d.planned_qps, 2) },
      { title: "unserved", field: "unserved", cls: "n", cell: (d) => num(d.unserved_qps, 2) },
    ], plan.demand.map((d) => ({ data: d }))));
    const targets = pageOf(plan.targets, targetsPage, 50);
    replace("targets", table([
      { title: "variant", field: "variant", cell: (t) => t.variant },
      { title: "worker", field: "worker", cell: (t) => t.worker },
      { title: "replicas", field: "replicas", cls: "n", cell: (t) => t.replicas },
    ], targets.rows.map((t) => ({ data: t }))), pager(targets.meta, (p) => { targetsPage = p; poll(); }, "targets"));
    replace("plans", table([
      { title: "tick", field: "tick", cls: "n", cell: (p) => p.tick },
      { title: "time", field: "time", cell: (p) => new Date(p.now_ms).toLocaleTimeString() },
      { title: "planner", field: "planner", cell: (p) => `${p.planner} (${p.status})` },
      { title: "solve ms", field: "solve", cls: "n", cell: (p) => num(p.solve_ms, 1) },
      { title: "actions", field: "actions", cls: "n", cell: (p) => p.actions.length },
      { title: "$/hour", field: "cost", cls: "n", cell: (p) => usd(p.cost_per_hour) },
    ], seen.slice(-10).reverse().map((p) => ({ data: p }))));
  });
}

// -- batch jobs ------------------------------------------------------------------------

function jobsPage(main) {
  let shown = 25;
  main.replaceChildren(el("h2", {}, "Batch jobs"), el("div", { id: "jobs" }));
  async function cancel(id) {
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      notice(`job ${id}: ${job.status}`);
      poll();
    } catch (error) { notice(explain(error), true); }
  }
  const cols = [
    { title: "job", field: "job_id", cell: (j) => j.job_id },
    { title: "app", field: "app", cell: (j) => j.app },
    { title: "status", field: "status", cell: (j) => j.status },
    { title: "progress", field: "progress", cell: (j) => bar(j.progress.items_done, j.progress.items_total) },
    { title: "chunks", field: "chunks", cls: "n", cell: (j) => `${j.progress.chunks_done}/${j.progress.chunks_total}` },
    { title: "variant", field: "variant", cell: (j) => j.variant },
    { title: "cost so far", field: "cost", cls: "n", cell: (j) => usd(j.cost_usd) },
    { title: "created", field: "created", cell: (j) => j.created_at },
    { title: "", field: "cancel", cell: (j) => (["queued", "running"].includes(j.status)
      ? el("button", { class: "danger", "data-cancel": j.job_id, onclick: () => cancel(j.job_id) }, "cancel") : "") },
  ];
  const poll = every(async () => {
    const got = await api(`/v1/jobs?limit=${shown}`);
    replace("jobs", got.jobs.length ? table(cols, got.jobs.map((j) => ({ data: j, attrs: { "data-job": j.job_id } })))
      : el("p", { class: "muted" }, "no batch jobs yet (infaas jobs submit …)"),
    got.jobs.length === shown && shown < 1000 ? el("button", { onclick: () => { shown = Math.min(1000, shown + 25); poll(); } }, "show more") : null);
  });
}

// -- registrations ---------------------------------------------------------------------

function registrationView(r) {
  const failed = r.variants.filter((v) => v.error);
  return el("article", { class: "registration", "data-registration": r.registration },
    el("h3", {}, `${r.app} / ${r.model}: `, el("span", { class: `status ${r.status}`, "data-field": "status" }, r.status)),
    el("p", { class: "muted" }, `${r.registration} · ${r.created_at}`),
    el("div", {}, Object.entries(r.hardware).map(([hw, t]) => el("p", {},
      `${hw}: ${t.status}${t.worker ? " on " + t.worker : ""}${t.error ? " — " + t.error : ""}`))),
    el("div", { class: "chips" }, r.variants.map((v) => el("span", { class: `chip ${v.status}`, "data-variant": v.id }, `${v.id}: ${v.status}`))),
    failed.length ? el("ul", { class: "bad" }, failed.map((v) => el("li", {}, `${v.id}: ${v.error}`))) : null);
}

function registrationsPage(main) {
  const params = new URLSearchParams(location.search);
  let page = 1;
  const form = el("form", { id: "register", class: "register" },
    el("label", {}, "app ", el("input", { name: "app", required: true, value: params.get("app") || "" })),
    el("label", {}, "model id ", el("input", { name: "id", placeholder: "from the file name" })),
    el("label", {}, "model (.onnx, .pt2) ", el("input", { name: "model", type: "file", required: true })),
    el("label", {}, "validation set (.npz) ", el("input", { name: "validation", type: "file", required: true })),
    el("label", {}, "profiling s per batch size ", el("input", { name: "budget_s_per_batch", type: "number",
      min: "0.01", step: "0.01", placeholder: "0.4" })),
    el("label", {}, el("input", { name: "create_app", type: "checkbox" }), " create the app if it is missing"),
    el("button", { type: "submit" }, "Register"), el("span", { id: "register-result" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const app = String(data.get("app"));
    const create = data.get("create_app") ? "?create_app=true" : "";
    data.delete("app"); data.delete("create_app");
    for (const field of ["id", "budget_s_per_batch"]) if (!data.get(field)) data.delete(field);
    try {
      const got = await api(`/v1/apps/${encodeURIComponent(app)}/models${create}`, { method: "POST", body: data });
      const mine = JSON.parse(sessionStorage.getItem(MINE) || "[]");
      sessionStorage.setItem(MINE, JSON.stringify([got.registration, ...mine].slice(0, 20)));
      replace("register-result", `registration ${got.registration} accepted`);
      poll();
    } catch (error) { replace("register-result", el("span", { class: "bad" }, explain(error))); }
  });
  main.replaceChildren(el("h2", {}, "Register a model"), form,
    el("h2", {}, "Registrations"), el("div", { id: "mine" }), el("div", { id: "registrations" }));
  const poll = every(async () => {
    const mine = JSON.parse(sessionStorage.getItem(MINE) || "[]");
    const followed = await Promise.all(mine.map((id) => api(`/v1/registrations/${encodeURIComponent(id)}`).catch(() => null)));
    replace("mine", followed.filter(Boolean).map(registrationView));
    try {
      const got = await api(`/v1/console/registrations?page=${page}&per_page=20`);
      replace("registrations", got.registrations.filter((r) => !mine.includes(r.registration)).map(registrationView),
        pager(got.page, (p) => { page = p; poll(); }, "registrations"));
    } catch (error) {
      if (error.status !== 403) throw error;
      replace("registrations", el("p", { class: "muted" }, "Listing registrations needs a deploy key; " +
        "those started from this tab are shown above."));
    }
  });
}

// -- start -----------------------------------------------------------------------------

function start() {
  const body = document.body;
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const showKey = () => { document.getElementById("key-state").textContent = sessionStorage.getItem(KEY) ? "key set" : "no key"; };
  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (keyInput.value.trim()) sessionStorage.setItem(KEY, keyInput.value.trim());
    else sessionStorage.removeItem(KEY);
    keyInput.value = "";
    showKey();
  });
  showKey();
  for (const a of document.querySelectorAll("nav a")) if (a.dataset.nav === body.dataset.page) a.classList.add("here");
  const main = document.getElementById("content");
  const pages = { overview: overviewPage, app: appPage, scaler: scalerPage, jobs: jobsPage, registrations: registrationsPage };
  pages[body.dataset.page](main, body.dataset.app);
}

start();
