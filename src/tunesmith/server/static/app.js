// tunesmith dashboard: a client of the public HTTP API (the one the SDK uses) and its SSE
// streams. No framework, no build step. Everything from the server or the user (file names,
// error messages, model answers) is put on the page as text (textContent / attributes via
// the el() helper), never parsed as HTML.

const KEY_NAME = "tunesmith.key";
const view = document.getElementById("view");
let leaving = new AbortController(); // aborted on every route change: streams stop

// ---------------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const node = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message, bad = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = bad ? "bad show" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.className = ""), 6000);
}

const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}
function fmtNum(v, digits = 4) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return Number(v.toPrecision(digits)).toString();
}
function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}
const signed = (v) => (typeof v === "number" ? (v > 0 ? "+" : "") + fmtNum(v) : "—");
const badge = (status) => el("span", { class: `badge s-${status}`, text: status });

// ---------------------------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function key() {
  return sessionStorage.getItem(KEY_NAME);
}

function headers(extra = {}) {
  const k = key();
  return k ? { ...extra, Authorization: `Bearer ${k}` } : extra;
}

async function api(path, { method = "GET", body, form, signal } = {}) {
  const opts = { method, headers: headers(), signal };
  if (form) opts.body = form;
  else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(`/v1${path}`, opts);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    if (res.status === 401) askKey(err.message || "this server needs an API key");
    throw new ApiError(res.status, err.message || `HTTP ${res.status}`, err.code);
  }
  return data;
}

async function listAll(path, limit = 100) {
  const out = [];
  let after = null;
  for (let i = 0; i < 50; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    out.push(...page.data);
    if (!page.has_more || !page.data.length) break;
    after = page.last_id;
  }
  return out;
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header): calls
// onData with each parsed `data:` payload until `[DONE]`, the end of the stream or abort.
async function sse(path, { method = "GET", body, signal, onData }) {
  const opts = { method, headers: headers({ Accept: "text/event-stream" }), signal };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(`/v1${path}`, opts);
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    try {
      message = (await res.json()).error.message || message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, message);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

const quiet = (err) => err && err.name === "AbortError";

// ---------------------------------------------------------------------------------- API key

const dialog = document.getElementById("key-dialog");
let keyWaiters = [];

function askKey(reason) {
  document.getElementById("key-reason").textContent = reason || "";
  if (!dialog.open) dialog.showModal();
  document.getElementById("key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  const choice = event.submitter ? event.submitter.value : "save";
  const input = document.getElementById("key-input");
  if (choice === "none") sessionStorage.setItem(KEY_NAME, "");
  else if (input.value.trim()) sessionStorage.setItem(KEY_NAME, input.value.trim());
  else {
    event.preventDefault();
    input.focus();
    return;
  }
  input.value = "";
  const waiters = keyWaiters;
  keyWaiters = [];
  waiters.forEach((w) => w());
  setTimeout(route, 0);
});
document.getElementById("key-button").addEventListener("click", () => askKey());

// ---------------------------------------------------------------------------------- SVG chart

// A line chart of named series [{name, points: [[x, y], ...]}], drawn as inline SVG.
function chart(id, title, series, { yLabel = "", xLabel = "step" } = {}) {
  const W = 640, H = 260, L = 56, R = 12, T = 14, B = 40;
  const all = series.flatMap((s) => s.points);
  const svg = el("svg:svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id,
    "aria-label": `${title}: ${all.length} points`, "data-points": all.length,
  });
  svg.append(el("svg:title", { text: title }));
  if (!all.length) {
    svg.append(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" },
      "waiting for metrics…"));
    return svg;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    svg.append(el("svg:line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }));
    svg.append(el("svg:text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end", class: "tick" }, fmtNum(y, 3)));
  }
  const whole = all.every((p) => Number.isInteger(p[0])); // steps: whole-number ticks only
  const xs = new Set();
  for (let i = 0; i <= 4; i++) {
    const x = x0 + ((x1 - x0) * i) / 4;
    xs.add(whole ? Math.round(x) : Math.round(x * 10) / 10);
  }
  for (const x of xs) {
    svg.append(el("svg:text", { x: sx(x), y: H - B + 16, "text-anchor": "middle", class: "tick" }, fmtNum(x, 4)));
  }
  svg.append(el("svg:text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, xLabel));
  if (yLabel) svg.append(el("svg:text", { x: 12, y: T + (H - T - B) / 2, class: "axis", transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, "text-anchor": "middle" }, yLabel));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg.append(el("svg:path", { d, class: `line c${i}` }));
    for (const p of s.points.length <= 60 ? s.points : []) {
      svg.append(el("svg:circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, class: `dot c${i}` },
        el("svg:title", { text: `${s.name} step ${p[0]}: ${fmtNum(p[1])}` })));
    }
  });
  return svg;
}

function legend(series) {
  return el("ul", { class: "legend" },
    series.filter((s) => s.points.length).map((s, i) =>
      el("li", {}, el("span", { class: `swatch c${i}`, "aria-hidden": "true" }), ` ${s.name} (${s.points.length})`)));
}

// ---------------------------------------------------------------------------------- Files

// The validation report (GET /v1/files/{id}/validation): every bad line with its field and
// reason, the warnings, the statistics; with a base model's tokenizer (?model=) also the token
// statistics and the trained-token preview of the first examples.
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function issueTable(id, caption, issues, withHint = true) {
  return el("div", { class: "scroll" }, el("table", { id },
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, ["Line", "Field", "Reason", "Code"].map((h) => el("th", { scope: "col", class: h === "Line" ? "num" : null }, h)))),
    el("tbody", {}, issues.map((p) => el("tr", {},
      el("td", { class: "num" }, p.line === null || p.line === undefined ? "—" : String(p.line)),
      el("td", { class: "mono" }, p.field || (p.line === null || p.line === undefined ? "whole file" : "—")),
      el("td", {}, p.message, withHint && p.hint ? el("div", { class: "help" }, p.hint) : null),
      el("td", { class: "mono small" }, p.code || "—"))))));
}

function statTable(id, caption, rows) {
  // rows: [[label, {min, mean, p50, p95, max, sum, ...}]]: every numeric key becomes a column
  const cols = [...new Set(rows.flatMap(([, s]) => Object.keys(s || {}).filter((k) => typeof s[k] === "number")))];
  return el("div", { class: "scroll" }, el("table", { id, class: "stats" },
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, ""), cols.map((c) => el("th", { scope: "col", class: "num" }, c)))),
    el("tbody", {}, rows.map(([label, s]) => el("tr", {},
      el("th", { scope: "row" }, label), cols.map((c) => el("td", { class: "num" }, fmtNum((s || {})[c]))))))));
}

function reportSummary(r) {
  const stats = r.stats || {};
  const file = (r.files || [])[0] || {};
  const usable = Object.entries(r.methods || {}).filter(([, v]) => v === "usable").map(([k]) => k);
  const facts = [
    ["Rows", `${r.rows_read ?? "—"} read · ${r.rows_ok ?? "—"} usable · ${r.rows_rejected ?? 0} rejected${r.rows_dropped ? ` · ${r.rows_dropped} dropped` : ""}`],
    ["Format", file.format || (r.settings && r.settings.format) || "—"],
    ["Records", stats.kind || "—"],
    ["Trains methods", usable.length ? usable.join(", ") : "none"],
  ];
  if (stats.labels && typeof stats.labels === "object") {
    facts.push(["Answers", Object.entries(stats.labels).slice(0, 12).map(([k, v]) => `${k} ×${v}`).join(" · ")]);
  }
  return el("dl", { class: "facts", id: "report-facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function previewBox(examples) {
  return el("div", { id: "preview" }, examples.map((ex) => el("figure", { class: "card preview" },
    el("figcaption", {}, `line ${ex.line ?? "—"}${ex.kind && ex.kind !== "sft" ? ` (${ex.kind})` : ""} · ${ex.n_tokens} tokens, ${ex.n_trained} trained${ex.truncated ? " · cut for display" : ""}`),
    el("pre", {}, ex.spans.map((s) => (s.trained ? el("mark", { class: "trained", title: "trained on (carries loss)" }, s.text) : el("span", {}, s.text)))))));
}

function tokenSection(r) {
  const parts = [];
  const t = (r.stats || {}).tokens;
  if (r.token_error) parts.push(el("p", { class: "bad" }, r.token_error));
  if (t && typeof t === "object") {
    const rows = Object.entries(t).filter(([, v]) => v && typeof v === "object");
    parts.push(statTable("token-stats", `Tokens per example (${r.settings && r.settings.max_seq_len ? `max_seq_len ${r.settings.max_seq_len}` : "as training reads them"})`, rows));
    if ((r.stats || {}).truncated) parts.push(el("p", { class: "warn" }, `${plural(r.stats.truncated, "row")} longer than max_seq_len.`));
  } else if (!r.token_error) parts.push(el("p", { class: "muted" }, "No token statistics for this file."));
  parts.push(el("h3", {}, "Trained tokens"));
  if (r.preview && r.preview.length) {
    parts.push(el("p", { class: "help" }, "The first examples as the model sees them, through its chat template; ",
      el("mark", { class: "trained" }, "highlighted"), " text is what training puts loss on."), previewBox(r.preview));
  } else parts.push(el("p", { class: "muted", id: "preview-note" }, r.preview_note || "No preview."));
  return parts;
}

function fileReport(file, report, models) {
  const box = el("section", { id: "file-report", class: "card", "aria-labelledby": "report-title" });
  box.append(el("h2", { id: "report-title" }, "Validation: ", el("span", { class: "mono", text: file.filename })));
  box.append(el("p", {}, badge(file.status), " ", el("span", { class: "muted" }, `${file.id} · ${fmtBytes(file.bytes)} · ${fmtTime(file.created_at)}`)));
  const errors = report.errors || [];
  const warnings = report.warnings || [];
  box.append(reportSummary(report));
  if (file.status === "processed" && !errors.length) box.append(el("p", { class: "ok" }, "Every row is usable training data."));
  if (errors.length) {
    const more = (report.error_count || errors.length) - errors.length;
    box.append(el("p", {}, `${plural(report.error_count || errors.length, "problem")} found — the file cannot be used until they are fixed:`),
      issueTable("problems", `Bad lines of ${file.filename}`, errors));
    if (more > 0) box.append(el("p", { class: "muted" }, `… and ${more} more.`));
  }
  if (warnings.length) {
    box.append(el("details", { id: "warnings-box", open: warnings.length <= 5 },
      el("summary", {}, plural(report.warning_count || warnings.length, "warning")),
      issueTable("warnings", `Warnings for ${file.filename}`, warnings)));
  }
  if (report.stats && report.stats.messages) box.append(statTable("message-stats", "Messages per example", [["messages", report.stats.messages]]));
  // token statistics and the preview need a tokenizer: a base model's, chosen here
  const tokens = el("div", { id: "token-slot", "aria-live": "polite" });
  const pick = el("select", { id: "report-model" }, models.map((m) => el("option", { value: m }, m)));
  const load = async () => {
    if (!pick.value) return;
    tokens.replaceChildren(el("p", { class: "muted" }, `Tokenizing with ${pick.value}…`));
    try {
      const r = await api(`/files/${encodeURIComponent(file.id)}/validation?model=${encodeURIComponent(pick.value)}`, { signal: leaving.signal });
      tokens.replaceChildren(...tokenSection(r));
    } catch (e) {
      if (!quiet(e)) tokens.replaceChildren(el("p", { class: "bad" }, e.message));
    }
  };
  pick.addEventListener("change", load);
  box.append(el("h3", {}, "Token statistics"),
    models.length ? el("div", { class: "row" }, el("label", { for: "report-model" }, "Tokenizer of "), pick) : el("p", { class: "muted" }, "No base model is offered, so no token counts."),
    tokens);
  load();
  return box;
}

async function pageFiles() {
  const input = el("input", { type: "file", id: "file-input", accept: ".jsonl,.json,.csv,.parquet,.gz", multiple: true });
  const drop = el("div", { class: "drop", id: "drop" },
    el("p", {}, "Drop JSONL / JSON / CSV / Parquet files here, or"),
    input, el("label", { for: "file-input", class: "button" }, "Choose files…"),
    el("p", { class: "muted" }, "Each file is checked at upload; bad lines are listed with their field and reason."));
  const report = el("div", { id: "report-slot" });
  const tbody = el("tbody");
  const table = el("table", { id: "files-table" },
    el("thead", {}, el("tr", {}, ["File", "Status", "Size", "Uploaded", "Id", ""].map((h) => el("th", { scope: "col" }, h)))), tbody);
  view.replaceChildren(el("h1", {}, "Files"), drop, report, el("h2", {}, "Uploaded files"), el("div", { class: "scroll" }, table));
  // the base models whose tokenizers can count a file's tokens (asked once, not awaited here:
  // the upload controls work at once)
  const bases = api("/models").then((m) => m.data.filter((x) => x.owned_by === "tunesmith").map((x) => x.id)).catch(() => []);

  let shown = 0; // the newest report asked for wins (uploads and clicks may overlap)
  async function show(f) {
    const mine = ++shown;
    report.replaceChildren(el("p", { class: "muted" }, "Loading the validation report of ", el("span", { class: "mono", text: f.filename }), "…"));
    try {
      const [r, models] = await Promise.all([api(`/files/${encodeURIComponent(f.id)}/validation`, { signal: leaving.signal }), bases]);
      if (mine === shown) report.replaceChildren(fileReport(f, r, models));
    } catch (e) {
      if (!quiet(e) && mine === shown) report.replaceChildren(el("p", { class: "bad" }, `No report for ${f.filename}: ${e.message}`));
    }
  }
  async function refresh() {
    const files = await listAll("/files?order=desc", 10000).catch((e) => (toast(e.message, true), []));
    tbody.replaceChildren(...files.map((f) => el("tr", {},
      el("td", { class: "mono" }, f.filename),
      el("td", {}, badge(f.status)),
      el("td", { class: "num" }, fmtBytes(f.bytes)),
      el("td", {}, fmtTime(f.created_at)),
      el("td", { class: "mono small" }, f.id),
      el("td", {}, el("button", { type: "button", class: "quiet", onclick: () => show(f), "aria-label": `Show validation of ${f.filename}` }, "Report")))));
    if (!files.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No files yet.")));
  }
  async function upload(list) {
    for (const file of list) {
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", file, file.name);
      report.replaceChildren(el("p", { class: "muted" }, "Uploading and validating ", el("span", { class: "mono", text: file.name }), "…"));
      try {
        show(await api("/files", { method: "POST", form }));
      } catch (e) {
        report.replaceChildren(el("p", { class: "bad" }, `Upload of ${file.name} failed: ${e.message}`));
      }
    }
    input.value = "";
    await refresh();
  }
  input.addEventListener("change", () => upload([...input.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload([...e.dataTransfer.files]);
  });
  await refresh();
}

// ---------------------------------------------------------------------------------- New job

const HYPER = {
  supervised: ["n_epochs", "batch_size", "learning_rate_multiplier"],
  dpo: ["n_epochs", "batch_size", "learning_rate_multiplier", "beta"],
  reinforcement: ["n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier", "eval_interval", "eval_samples"],
};
const AUTO_HELP = {
  n_epochs: "auto: chosen from the dataset size (small sets get more passes), 1–50.",
  batch_size: "auto: chosen from the model and sequence length to fit memory, 1–256.",
  learning_rate_multiplier: "auto: the adapter's default learning rate (multiplier 1); the run resolves it.",
  beta: "DPO's beta, 0 < beta ≤ 2; auto = 0.1.",
  compute_multiplier: "Completions per prompt K = clamp(round(4 × this), 2, 64); auto = 1 (K = 4).",
  eval_interval: "Training steps between evaluations; auto = the server's default.",
  eval_samples: "Completions scored per held-out prompt, 1–64; auto = the server's default.",
};

function parseHyper(name, raw) {
  const v = raw.trim();
  if (!v || v === "auto") return "auto";
  const n = Number(v);
  if (!isFinite(n)) throw new Error(`${name}: a number or auto`);
  return ["n_epochs", "batch_size", "eval_interval", "eval_samples"].includes(name) ? Math.round(n) : n;
}

// "12.5 min", "0.4 min (25 s)": the estimate's seconds as minutes.
function fmtMinutes(s) {
  if (typeof s !== "number" || !isFinite(s)) return "—";
  const m = s / 60;
  const text = `${m < 10 ? m.toFixed(1) : Math.round(m)} min`;
  return s < 60 ? `${text} (${Math.round(s)} s)` : m >= 120 ? `${text} (${fmtDuration(s)})` : text;
}
const isSeconds = (key) => key === "seconds" || /_seconds$|_s$/.test(key);
const fmtValue = (key, v) => (isSeconds(key) && typeof v === "number" ? fmtMinutes(v)
  : v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : typeof v === "boolean" ? (v ? "yes" : "no") : fmtNum(v));

// What `auto` stands for in each of OpenAI's fields, from the estimate's plan (when it has it).
function autoNow(name, est) {
  const plan = est.hyperparameters || {};
  const why = est.explanations || {};
  if (name === "n_epochs" && plan.epochs !== undefined) return `auto now: ${plan.epochs} epochs${why.epochs ? ` — ${why.epochs}` : ""}`;
  if (name === "batch_size" && plan.examples_per_step !== undefined) {
    const rows = plan.batch_size !== undefined && plan.grad_accum !== undefined ? ` (${plan.batch_size} × ${plan.grad_accum} rows)` : "";
    return `auto now: ${fmtNum(plan.examples_per_step)} examples per step${rows}${why.grad_accum ? ` — ${why.grad_accum}` : ""}`;
  }
  if (name === "learning_rate_multiplier" && plan.learning_rate !== undefined) return `auto now: 1 × learning rate ${fmtNum(plan.learning_rate)}${why.learning_rate ? ` — ${why.learning_rate}` : ""}`;
  return "";
}

function estimateView(est) {
  const parts = [];
  if (est.problems && est.problems.length) {
    parts.push(el("div", { class: "bad", id: "estimate-problems" }, el("p", {}, "Training would stop on these rows:"),
      el("ul", {}, est.problems.map((p) => el("li", {}, p)))));
  }
  parts.push(el("p", { id: "estimate-time", class: "big" }, typeof est.seconds === "number"
    ? ["About ", el("strong", {}, fmtMinutes(est.seconds)), " of training", est.estimate && est.estimate.device ? ` on ${est.estimate.device}` : "", " once a worker starts the job."]
    : "No time estimate for this job."));
  const plan = est.hyperparameters || {};
  const fixed = est.fixed || {};
  const why = est.explanations || {};
  const keys = Object.keys(plan);
  for (const k of Object.keys(fixed)) if (!keys.includes(k)) keys.push(k);
  // a reason may name its setting as the run spec does ("eval.every_steps" for the plan's
  // "eval_every_steps", "early_stopping.enabled" for "early_stopping")
  const norm = (k) => k.toLowerCase().replace(/[^a-z0-9]/g, "");
  const used = new Set();
  const reason = (k) => {
    const found = Object.keys(why).find((w) => w === k) || Object.keys(why).find((w) => norm(w) === norm(k) || norm(w).startsWith(norm(k)));
    if (found === undefined) return "";
    used.add(found);
    return why[found];
  };
  if (keys.length) {
    parts.push(el("div", { class: "scroll" }, el("table", { id: "estimate-hyper" },
      el("caption", {}, "What the run would train with"),
      el("thead", {}, el("tr", {}, ["Setting", "Value", "From", "Why"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, keys.map((k) => {
        const f = fixed[k];
        const from = f ? `${f.by === "request" ? "you" : "the server"}${f.auto !== undefined ? ` (auto: ${fmtValue(k, f.auto)})` : ""}` : "auto";
        return el("tr", { "data-key": k },
          el("th", { scope: "row", class: "mono" }, k),
          el("td", { class: "num" }, fmtValue(k, f ? f.value : plan[k])),
          el("td", {}, from),
          el("td", { class: "small" }, reason(k)));
      })))));
    const other = Object.entries(why).filter(([k]) => !used.has(k));
    if (other.length) parts.push(el("dl", { class: "facts small", id: "estimate-why" }, other.flatMap(([k, v]) => [el("dt", { class: "mono" }, k), el("dd", {}, v)])));
  }
  if (est.estimate) {
    parts.push(el("details", { id: "estimate-details" }, el("summary", {}, "How the time is estimated"),
      el("dl", { class: "facts" }, Object.entries(est.estimate).flatMap(([k, v]) => [el("dt", { class: "mono" }, k), el("dd", {}, fmtValue(k, v))]))));
  }
  const d = est.data || {};
  if (d.rows_ok !== undefined) {
    const tokens = d.tokens && d.tokens.total ? ` · ${fmtNum(d.tokens.total.sum)} tokens (${fmtNum(d.tokens.trained ? d.tokens.trained.sum : null)} trained)` : "";
    parts.push(el("p", { class: "muted" }, `Data: ${d.rows_ok} usable rows${tokens}.`));
  }
  if (est.notes && est.notes.length) parts.push(el("ul", { id: "estimate-notes", class: "small" }, est.notes.map((n) => el("li", {}, n))));
  return parts;
}

async function pageNew() {
  const [models, files] = await Promise.all([api("/models"), listAll("/files?order=desc", 10000)]);
  const bases = models.data.filter((m) => m.owned_by === "tunesmith");
  const usable = files.filter((f) => f.status === "processed");
  const opt = (value, label) => el("option", { value }, label);
  const field = (id, label, control, help) => el("div", { class: "field" },
    el("label", { for: id }, label), control, help ? el("p", { class: "help", id: `${id}-help` }, help) : null);

  const model = el("select", { id: "job-model", required: true }, bases.map((m) => opt(m.id, m.id)));
  const fileLabel = (f) => `${f.filename} (${f.id})`;
  const train = el("select", { id: "job-train", required: true }, usable.map((f) => opt(f.id, fileLabel(f))));
  const val = el("select", { id: "job-val" }, opt("", "none (no verdict)"), usable.map((f) => opt(f.id, fileLabel(f))));
  const suffix = el("input", { id: "job-suffix", pattern: "[A-Za-z0-9_.\\-]*", maxlength: 64, placeholder: "e.g. tickets" });
  const methods = ["supervised", "dpo", "reinforcement"];
  const methodBox = el("fieldset", { class: "field" }, el("legend", {}, "Method"),
    methods.map((m) => el("label", { class: "inline" },
      el("input", { type: "radio", name: "method", value: m, checked: m === "supervised" }), ` ${m}`)));
  const hyperBox = el("fieldset", { id: "hyper" }, el("legend", {}, "Hyperparameters"));
  const grader = el("textarea", { id: "job-grader", rows: 6, spellcheck: "false" },
    JSON.stringify({ type: "string_check", name: "label", operation: "eq", input: "{{sample.output_text}}", reference: "{{item.label}}" }, null, 2));
  const graderField = field("job-grader", "Grader (OpenAI grader object, JSON)", grader, "Scores each sampled answer; checked by the server when the job is created.");
  const inputs = {};
  let latest = null; // the newest estimate shown
  const helpText = (name) => [AUTO_HELP[name], latest ? autoNow(name, latest) : ""].filter(Boolean).join(" ");
  function drawHyper() {
    const method = methodBox.querySelector("input:checked").value;
    hyperBox.replaceChildren(el("legend", {}, "Hyperparameters"),
      el("p", { class: "help" }, "Leave a value at auto and the run picks it from your data and model; the estimate below says what it picks and why."));
    for (const name of HYPER[method]) {
      inputs[name] = inputs[name] || el("input", { id: `hp-${name}`, value: "auto", inputmode: "decimal", "aria-describedby": `hp-${name}-help` });
      hyperBox.append(field(`hp-${name}`, name, inputs[name], helpText(name)));
    }
    graderField.hidden = method !== "reinforcement";
  }
  drawHyper();

  // One body for the estimate and the launch: what is estimated is what is launched.
  function body() {
    const method = methodBox.querySelector("input:checked").value;
    const hyper = {};
    for (const name of HYPER[method]) hyper[name] = parseHyper(name, inputs[name].value);
    const block = { hyperparameters: hyper };
    if (method === "reinforcement") block.grader = JSON.parse(grader.value);
    const out = { model: model.value, training_file: train.value, method: { type: method, [method]: block } };
    if (val.value) out.validation_file = val.value;
    if (suffix.value.trim()) out.suffix = suffix.value.trim();
    return out;
  }

  const estimateSlot = el("div", { id: "estimate-body", "aria-live": "polite" });
  const estimateBox = el("section", { class: "estimate card", id: "estimate", "aria-labelledby": "estimate-title", "data-state": "idle" },
    el("h2", { id: "estimate-title" }, "Estimate"), estimateSlot);
  let asked = 0, timer = null;
  async function estimate() {
    const mine = ++asked;
    let request;
    try {
      request = body();
    } catch (e) {
      estimateBox.dataset.state = "error";
      estimateSlot.replaceChildren(el("p", { class: "bad" }, e.message));
      return;
    }
    if (!request.training_file) {
      estimateSlot.replaceChildren(el("p", { class: "muted" }, "Choose a training file to see what the job would do and how long it would take."));
      return;
    }
    estimateBox.dataset.state = "loading";
    estimateSlot.replaceChildren(el("p", { class: "muted" }, "Estimating (the server reads the files with the model's tokenizer)…"));
    try {
      const est = await api("/tunesmith/fine_tuning/estimates", { method: "POST", body: request, signal: leaving.signal });
      if (mine !== asked) return;
      latest = est;
      estimateSlot.replaceChildren(...estimateView(est));
      estimateBox.dataset.state = "ready";
      estimateBox.dataset.for = JSON.stringify(request); // what this estimate answers
      for (const name of Object.keys(inputs)) {
        const help = document.getElementById(`hp-${name}-help`);
        if (help) help.textContent = helpText(name);
      }
    } catch (e) {
      if (quiet(e) || mine !== asked) return;
      estimateBox.dataset.state = "error";
      estimateSlot.replaceChildren(el("p", { class: "bad" }, `No estimate: ${e.message}`));
    }
  }
  const soon = () => { clearTimeout(timer); timer = setTimeout(estimate, 500); };

  const error = el("p", { class: "bad", id: "job-error", role: "alert" });
  const form = el("form", { id: "new-job", class: "card" },
    field("job-model", "Base model", model),
    field("job-train", "Training file", train, usable.length ? null : "No validated files yet — upload one on the Files page."),
    field("job-val", "Validation file", val, "Held out: gives validation loss and, after training, the base-vs-tuned verdict."),
    field("job-suffix", "Suffix (optional)", suffix, "Part of the fine-tuned model's name."),
    methodBox, hyperBox, graderField, estimateBox,
    error,
    el("div", { class: "row" },
      el("button", { type: "submit", id: "job-submit" }, "Launch job"),
      el("button", { type: "button", id: "job-estimate", class: "quiet", onclick: estimate }, "Estimate again")));
  methodBox.addEventListener("change", () => { drawHyper(); soon(); });
  for (const control of [model, train, val]) control.addEventListener("change", soon);
  hyperBox.addEventListener("input", soon);
  grader.addEventListener("input", soon);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", body: body() });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      error.textContent = e.message;
    }
  });
  view.replaceChildren(el("h1", {}, "New fine-tuning job"), form);
  estimate();
}

// ---------------------------------------------------------------------------------- Job page

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const CONTROLS = {
  cancel: new Set(["validating_files", "queued", "running", "pausing", "paused"]),
  pause: new Set(["validating_files", "queued", "running"]),
  resume: new Set(["paused"]),
};

function jobLinks(id, here) {
  const enc = encodeURIComponent(id);
  return el("nav", { class: "tabs", "aria-label": "Job" },
    [["Job", `#/jobs/${enc}`], ["Verdict", `#/jobs/${enc}/verdict`], ["Playground", `#/playground/${enc}`]].map(([name, href]) =>
      el("a", { href, "aria-current": here === name ? "page" : null }, name)));
}

async function pageJob(id) {
  const signal = leaving.signal;
  let job = await api(`/fine_tuning/jobs/${encodeURIComponent(id)}`);
  const head = el("div", { id: "job-head" });
  const buttons = el("div", { class: "row", id: "job-controls" });
  const lossBox = el("figure", { class: "card" });
  const accBox = el("figure", { class: "card" });
  const ckptBody = el("tbody");
  const log = el("ol", { id: "events", class: "log", "aria-live": "off" });
  const exportBox = el("section", { id: "exports", class: "card", "aria-labelledby": "exports-title", hidden: true });
  let exporting = false; // the export panel, once the job has succeeded
  const drawExports = () => {
    if (exporting || job.status !== "succeeded" || !job.fine_tuned_model) return;
    exporting = true;
    exportBox.hidden = false;
    exportPanel(job, exportBox, signal);
  };
  view.replaceChildren(el("h1", {}, "Job ", el("span", { class: "mono", text: job.id })), jobLinks(job.id, "Job"), head, buttons, exportBox,
    el("div", { class: "charts" }, lossBox, accBox),
    el("h2", {}, "Checkpoints"),
    el("div", { class: "scroll" }, el("table", { id: "checkpoints" }, el("thead", {}, el("tr", {}, ["Step", "Model", "Metrics", "Created"].map((h) => el("th", { scope: "col" }, h)))), ckptBody)),
    el("h2", {}, "Events"), log);

  const series = {}; // metric name -> [[step, value]]
  const lossNames = (n) => /loss/.test(n);
  const accNames = (n) => /accuracy|reward/.test(n) && !/reward_margin|std/.test(n);
  function drawCharts() {
    const pick = (test) => Object.keys(series).filter(test).sort().map((name) => ({ name, points: series[name] }));
    const loss = pick(lossNames), acc = pick(accNames);
    lossBox.replaceChildren(chart("chart-loss", "Loss", loss, { yLabel: "loss" }), el("figcaption", {}, "Loss ", legend(loss)));
    accBox.replaceChildren(chart("chart-acc", "Token accuracy / reward", acc), el("figcaption", {}, "Accuracy / reward ", legend(acc)));
  }
  function drawHead() {
    const hyper = (job.method && job.method[job.method.type] && job.method[job.method.type].hyperparameters) || job.hyperparameters || {};
    const end = job.finished_at || Date.now() / 1000;
    const rows = [
      ["Status", badge(job.status)],
      ["Model", job.model], ["Method", job.method ? job.method.type : "supervised"],
      ["Fine-tuned model", job.fine_tuned_model || "—"],
      ["Training file", job.training_file], ["Validation file", job.validation_file || "—"],
      ["Created", fmtTime(job.created_at)], ["Duration", fmtDuration(end - job.created_at)],
      ["Estimated finish", job.estimated_finish ? fmtTime(job.estimated_finish) : "—"],
      ["Trained tokens", job.trained_tokens ?? "—"],
      ["Hyperparameters", Object.entries(hyper).map(([k, v]) => `${k}=${v}`).join(", ")],
    ];
    if (job.error) rows.push(["Error", el("span", { class: "bad" }, job.error.message || JSON.stringify(job.error))]);
    head.replaceChildren(el("dl", { class: "facts", id: "job-facts", "data-status": job.status }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
    buttons.replaceChildren(...Object.keys(CONTROLS).map((action) => el("button", {
      type: "button", id: `job-${action}`, class: action === "cancel" ? "danger" : "", disabled: !CONTROLS[action].has(job.status),
      onclick: async () => {
        try {
          job = await api(`/fine_tuning/jobs/${encodeURIComponent(job.id)}/${action}`, { method: "POST" });
          drawHead();
          toast(`${action} requested: job is ${job.status}`);
        } catch (e) {
          toast(e.message, true);
        }
      },
    }, action[0].toUpperCase() + action.slice(1))));
  }
  async function drawCheckpoints() {
    const items = await listAll(`/fine_tuning/jobs/${encodeURIComponent(job.id)}/checkpoints`).catch(() => []);
    items.sort((a, b) => a.step_number - b.step_number);
    ckptBody.replaceChildren(...items.map((c) => el("tr", {},
      el("td", { class: "num" }, String(c.step_number)),
      el("td", { class: "mono small" }, c.fine_tuned_model_checkpoint),
      el("td", { class: "small" }, Object.entries(c.metrics || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${fmtNum(v)}`).join(" · ")),
      el("td", {}, fmtTime(c.created_at)))));
    if (!items.length) ckptBody.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No checkpoints yet.")));
  }
  let refreshing = null;
  function refreshJob() {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try {
        job = await api(`/fine_tuning/jobs/${encodeURIComponent(job.id)}`, { signal });
        drawHead();
        drawExports();
        await drawCheckpoints();
      } catch (e) {
        if (!quiet(e)) toast(e.message, true);
      }
    }, 300);
  }
  function onEvent(e) {
    if (e.type === "metrics" && e.data) {
      const step = e.data.step;
      for (const [name, value] of Object.entries(e.data)) {
        if (typeof value !== "number" || !(lossNames(name) || accNames(name))) continue;
        (series[name] = series[name] || []).push([step, value]);
      }
      drawCharts();
    } else refreshJob();
    log.prepend(el("li", { class: `lv-${e.level}` },
      el("time", {}, new Date(e.created_at * 1000).toLocaleTimeString()), " ",
      el("span", { class: "level" }, e.level), " ", e.message));
  }
  drawHead();
  drawExports();
  drawCharts();
  drawCheckpoints();
  const ticker = setInterval(() => !TERMINAL.has(job.status) && drawHead(), 1000);
  signal.addEventListener("abort", () => clearInterval(ticker));
  try {
    await sse(`/fine_tuning/jobs/${encodeURIComponent(job.id)}/events?stream=true`, { signal, onData: onEvent });
    refreshJob();
  } catch (e) {
    if (!quiet(e)) toast(`event stream: ${e.message}`, true);
  }
}

// ---------------------------------------------------------------------------------- Export

const EXPORTS = [
  ["hf", "Merged safetensors", "merged safetensors", "The adapter merged into the base model (float32), for transformers, vLLM or further training; downloaded as one zip."],
  ["gguf", "GGUF + Ollama Modelfile", "GGUF + Modelfile", "A q8_0 GGUF for llama.cpp and Ollama, with a Modelfile that carries the chat template and stop tokens."],
];

// A download through fetch, so the key travels as a header (never in a URL), saved by the
// browser under the export's own file name.
async function download(path, name, button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = `Downloading ${name}…`;
  try {
    const res = await fetch(`/v1${path}`, { headers: headers() });
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try { message = (await res.json()).error.message || message; } catch { /* not JSON */ }
      throw new Error(message);
    }
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    button.dataset.downloaded = String(blob.size);
    toast(`Downloaded ${name} (${fmtBytes(blob.size)})`);
  } catch (e) {
    toast(`Download failed: ${e.message}`, true);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function exportPanel(job, box, signal) {
  const base = `/fine_tuning/jobs/${encodeURIComponent(job.id)}/exports`;
  const rows = {}, info = {};
  for (const [fmt, title, short, help] of EXPORTS) {
    rows[fmt] = el("div", { class: "export", id: `export-${fmt}`, "data-status": "none" });
    info[fmt] = { title, short, help };
  }
  box.replaceChildren(el("h2", { id: "exports-title" }, "Export"),
    el("p", { class: "help" }, "Each export runs on the server in the background and is checked by reloading it before it is offered."),
    ...Object.values(rows));
  let timer = null;
  function draw(fmt, exp) {
    const row = rows[fmt], { title, short, help } = info[fmt];
    row.dataset.status = exp ? exp.status : "none";
    const start = el("button", {
      type: "button", id: `export-${fmt}-start`, class: exp ? "quiet" : "",
      disabled: exp && (exp.status === "queued" || exp.status === "running"),
      onclick: async () => {
        try {
          draw(fmt, await api(base, { method: "POST", body: { format: fmt } }));
          poll();
        } catch (e) {
          toast(e.message, true);
        }
      },
    }, exp && exp.status === "failed" ? `Retry the ${short} export` : `Export ${short}`);
    const parts = [el("h3", {}, title), el("p", { class: "help" }, help)];
    const line = el("div", { class: "row" }, exp && exp.status !== "failed" ? null : start);
    if (exp) line.append(badge(exp.status));
    if (exp && (exp.status === "queued" || exp.status === "running")) {
      const p = exp.progress || { percent: 0, message: exp.status === "queued" ? "waiting for another export" : "starting" };
      line.append(el("progress", { max: 100, value: p.percent || 0, "aria-label": `${title} export progress` }),
        el("span", { class: "small" }, `${p.percent || 0}% · ${p.message || ""}`));
    }
    parts.push(line);
    if (exp && exp.status === "failed" && exp.error) parts.push(el("p", { class: "bad" }, exp.error.message));
    if (exp && exp.status === "succeeded" && exp.download) {
      const path = `${base}/${encodeURIComponent(exp.id)}/content`;
      const main = el("button", { type: "button", id: `export-${fmt}-download` }, `Download ${exp.download.name} (${fmtBytes(exp.download.bytes)})`);
      main.addEventListener("click", () => download(path, exp.download.name, main));
      const links = el("div", { class: "row" }, main);
      const modelfile = (exp.files || []).find((f) => f.name === "Modelfile");
      if (modelfile) {
        const mf = el("button", { type: "button", class: "quiet", id: `export-${fmt}-modelfile` }, "Download Modelfile");
        mf.addEventListener("click", () => download(`${path}?file=Modelfile`, "Modelfile", mf));
        links.append(mf);
      }
      parts.push(links);
      const rt = exp.roundtrip;
      if (rt) parts.push(el("p", { class: "small muted" }, `Verified: tokens ${rt.tokens_match ? "identical" : "differ"}, chat template ${rt.template_match ? "identical" : "differs"}, top-1 agreement ${fmtNum(100 * rt.top1_agreement, 3)}% over ${rt.positions} positions${exp.seconds ? `; took ${fmtDuration(exp.seconds)}` : ""}.`));
      if (fmt === "gguf") parts.push(el("p", { class: "small" }, "Then: ", el("code", {}, `ollama create ${exp.name || "my-model"} -f Modelfile`), " in the folder holding both files."));
      for (const w of exp.warnings || []) parts.push(el("p", { class: "small warn" }, w));
    }
    row.replaceChildren(...parts);
  }
  async function refresh() {
    const page = await api(base, { signal });
    const latest = {};
    for (const e of page.data) latest[e.format] = e;
    for (const [fmt] of EXPORTS) draw(fmt, latest[fmt]);
    return page.data.some((e) => e.status === "queued" || e.status === "running");
  }
  function poll() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        if (await refresh()) poll();
      } catch (e) {
        if (!quiet(e)) toast(e.message, true);
      }
    }, 1000);
  }
  signal.addEventListener("abort", () => clearTimeout(timer));
  refresh().then((active) => active && poll()).catch((e) => {
    if (!quiet(e)) box.append(el("p", { class: "bad" }, e.message));
  });
}

// ---------------------------------------------------------------------------------- Verdict

// "…/file-abc.jsonl:7" -> "line 7": the sample's place in the validation file, not a path.
function lineOf(source) {
  const m = /:(\d+)$/.exec(source || "");
  return m ? `line ${m[1]}` : "";
}

async function pageVerdict(id) {
  const job = await api(`/fine_tuning/jobs/${encodeURIComponent(id)}`);
  const parts = [el("h1", {}, "Verdict ", el("span", { class: "mono", text: job.id })), jobLinks(job.id, "Verdict")];
  if (!job.validation_file || job.status !== "succeeded") {
    parts.push(el("p", { class: "card", id: "verdict-none" }, !job.validation_file
      ? "This job had no validation file, so there is no base-vs-tuned comparison."
      : `The verdict is written when the job has succeeded (it is ${job.status}).`));
    view.replaceChildren(...parts);
    return;
  }
  let ev;
  try {
    ev = await api(`/fine_tuning/jobs/${encodeURIComponent(id)}/evaluation`);
  } catch (e) {
    parts.push(el("p", { class: "card bad" }, e.message));
    view.replaceChildren(...parts);
    return;
  }
  parts.push(el("p", { id: "verdict", class: `card verdict ${ev.improved ? "good" : "flat"}` }, ev.verdict || "—"));
  // The public names of what was compared (the evaluation's own fields name server paths).
  parts.push(el("p", { class: "muted" }, `Base ${job.model} vs tuned ${job.fine_tuned_model || ev.tuned_model} on the validation file ${job.validation_file} (n=${ev.n}). Intervals are 95% paired-bootstrap confidence intervals of tuned − base; p is the paired test's p-value.`));
  const metrics = Object.entries(ev.metrics || {});
  parts.push(el("div", { class: "scroll" }, el("table", { id: "verdict-table" },
    el("thead", {}, el("tr", {}, ["Metric", "Base", "Tuned", "Difference", "95% CI", "p", "Verdict"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, metrics.map(([name, m]) => el("tr", { class: m.significant ? "sig" : "" },
      el("th", { scope: "row" }, name === ev.main_metric ? `${name} (main)` : name, m.description ? el("div", { class: "help" }, m.description) : null),
      el("td", { class: "num" }, fmtNum(m.base)), el("td", { class: "num" }, fmtNum(m.tuned)),
      el("td", { class: "num" }, signed(m.diff)),
      el("td", { class: "num" }, m.ci ? `${signed(m.ci[0])} … ${signed(m.ci[1])}` : "—"),
      el("td", { class: "num" }, fmtNum(m.p_value, 2)),
      el("td", {}, m.verdict || (m.significant ? "significant" : "not significant"))))))));
  if (ev.forgetting) {
    const f = ev.forgetting;
    parts.push(el("section", { class: `card ${f.warning ? "warnbox" : ""}`, id: "forgetting" }, el("h2", {}, "Forgetting check"), el("p", {}, f.message || JSON.stringify(f))));
  }
  if (ev.prompt_cost) {
    parts.push(el("section", { class: "card", id: "prompt-cost" }, el("h2", {}, "Prompt cost"),
      el("dl", { class: "facts" }, Object.entries(ev.prompt_cost).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "object" ? JSON.stringify(v) : fmtNum(v))]))));
  }
  const samples = (ev.samples || []).slice(0, 30);
  if (samples.length) {
    const text = (msgs) => (Array.isArray(msgs) ? msgs.map((m) => `${m.role}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}`).join("\n") : String(msgs ?? ""));
    parts.push(el("h2", {}, "Sample answers"), el("div", { class: "scroll" }, el("table", { id: "samples", class: "samples" },
      el("thead", {}, el("tr", {}, ["Prompt", "Base", "Tuned", "Reference"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, samples.map((s) => el("tr", {},
        el("td", {}, el("pre", {}, text(s.prompt)), el("div", { class: "help" }, lineOf(s.source))),
        el("td", {}, el("pre", {}, s.base_output ?? "")), el("td", {}, el("pre", {}, s.tuned_output ?? "")),
        el("td", {}, el("pre", {}, s.reference ?? ""))))))));
  }
  view.replaceChildren(...parts);
}

// ---------------------------------------------------------------------------------- Playground

async function pagePlayground(jobId) {
  const signal = leaving.signal;
  const models = (await api("/models")).data.map((m) => m.id);
  let job = null, ckpts = [];
  if (jobId) {
    job = await api(`/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
    ckpts = await listAll(`/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints`).catch(() => []);
    ckpts.sort((a, b) => b.step_number - a.step_number);
  }
  const preset = [
    ["base", "Base", job ? job.model : models[0]],
    ["tuned", "Tuned", job && job.fine_tuned_model ? job.fine_tuned_model : ""],
    ["ckpt", "Checkpoint", ckpts.length ? ckpts[0].fine_tuned_model_checkpoint : ""],
  ];
  const prompt = el("textarea", { id: "pg-prompt", rows: 3, placeholder: "Ask something…" });
  const maxTokens = el("input", { id: "pg-max", type: "number", min: 1, max: 2048, value: 64 });
  const temp = el("input", { id: "pg-temp", type: "number", min: 0, max: 2, step: 0.1, value: 0 });
  const columns = preset.map(([slot, label, chosen]) => {
    const select = el("select", { id: `pg-model-${slot}` }, el("option", { value: "" }, "— none —"),
      models.map((m) => el("option", { value: m, selected: m === chosen }, m)));
    const out = el("pre", { id: `pg-out-${slot}`, class: "answer", "aria-live": "polite" });
    const info = el("p", { class: "help", id: `pg-info-${slot}` });
    return { slot, select, out, info, box: el("section", { class: "card col" }, el("label", { for: `pg-model-${slot}` }, label), select, out, info) };
  });
  const form = el("form", { id: "pg-form", class: "card" },
    el("label", { for: "pg-prompt" }, "Prompt"), prompt,
    el("div", { class: "row" },
      el("label", { for: "pg-max", class: "inline" }, "Max tokens ", maxTokens),
      el("label", { for: "pg-temp", class: "inline" }, "Temperature ", temp),
      el("button", { type: "submit", id: "pg-send" }, "Send to all")));
  view.replaceChildren(el("h1", {}, "Playground"), job ? jobLinks(job.id, "Playground") : el("p", { class: "muted" }, "Open a job's playground from its page to preselect its models."),
    form, el("div", { class: "cols" }, columns.map((c) => c.box)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) return prompt.focus();
    // Each column starts once the one before it has streamed its first chunk (or ended): the
    // answers still stream side by side, but the server never loads two models at once for
    // them (concurrent first loads of different models can fail in the serving pool).
    const chosen = columns.filter((c) => c.select.value);
    for (const c of columns) {
      c.out.textContent = "";
      c.out.removeAttribute("data-done");
      c.info.textContent = c.select.value ? "waiting…" : "";
    }
    let previous = Promise.resolve();
    for (const c of chosen) {
      let firstChunk;
      const begun = new Promise((resolve) => (firstChunk = resolve));
      await previous;
      previous = begun;
      if (signal.aborted) return;
      c.info.textContent = "streaming…";
      const started = performance.now();
      let tokens = 0, finish = null;
      sse("/chat/completions", {
        method: "POST", signal,
        body: { model: c.select.value, messages: [{ role: "user", content: text }], stream: true, max_tokens: Number(maxTokens.value) || 64, temperature: Number(temp.value) || 0 },
        onData: (chunk) => {
          firstChunk();
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) { c.out.textContent += choice.delta.content; tokens++; }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        },
      }).finally(firstChunk).then(() => {
        c.out.dataset.done = "1";
        const chars = c.out.textContent.length, blank = chars && !c.out.textContent.trim();
        c.info.textContent = `${tokens} chunks · ${chars} characters${blank ? " (whitespace only)" : ""} · ${((performance.now() - started) / 1000).toFixed(1)} s · finish: ${finish || "—"}`;
      }).catch((e) => {
        if (quiet(e)) return;
        c.out.dataset.done = "error";
        c.info.textContent = `error: ${e.message}`;
      });
    }
  });
}

// ---------------------------------------------------------------------------------- Queue

async function pageQueue() {
  const jobs = await listAll("/fine_tuning/jobs");
  const statuses = ["all", "validating_files", "queued", "running", "pausing", "paused", "succeeded", "failed", "cancelled"];
  const filter = el("select", { id: "queue-filter" }, statuses.map((s) => el("option", { value: s }, s)));
  const tbody = el("tbody");
  const now = Date.now() / 1000;
  const signal = leaving.signal;
  const metricOf = new Map(); // job id -> its newest checkpoint's main metric, as text
  // The main metric of a job: its newest checkpoint's held-out figure, else its training one.
  const MAIN = ["valid_loss", "valid_reward", "valid_preference_accuracy", "train_loss", "train_reward"];
  async function metric(j, cell) {
    if (!metricOf.has(j.id)) {
      const page = await api(`/fine_tuning/jobs/${encodeURIComponent(j.id)}/checkpoints?limit=1`, { signal }).catch(() => null);
      const m = (page && page.data[0] && page.data[0].metrics) || {};
      const name = MAIN.find((n) => typeof m[n] === "number");
      metricOf.set(j.id, name ? `${name} ${fmtNum(m[name])} (step ${page.data[0].step_number})` : "—");
    }
    cell.textContent = metricOf.get(j.id);
  }
  function draw() {
    const want = filter.value;
    const shown = jobs.filter((j) => want === "all" || j.status === want);
    tbody.replaceChildren(...shown.map((j) => el("tr", {},
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id)),
      el("td", {}, badge(j.status)),
      el("td", {}, j.model), el("td", {}, j.method ? j.method.type : "supervised"),
      el("td", {}, fmtTime(j.created_at)),
      el("td", { class: "num" }, fmtDuration((j.finished_at || now) - j.created_at)),
      el("td", { class: "num" }, j.trained_tokens ?? "—"),
      el("td", { class: "small", "data-metric": j.id }, "…"),
      el("td", { class: "mono small" }, j.fine_tuned_model || (j.error ? j.error.message : "—")))));
    if (!shown.length) tbody.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No jobs.")));
    const cells = [...tbody.querySelectorAll("td[data-metric]")];
    shown.forEach((j, i) => (i < 40 ? metric(j, cells[i]) : (cells[i].textContent = "—")));
  }
  filter.addEventListener("change", draw);
  draw();
  view.replaceChildren(el("h1", {}, "Queue"),
    el("div", { class: "row" }, el("label", { for: "queue-filter" }, "Status "), filter, el("a", { href: "#/new", class: "button" }, "New job")),
    el("div", { class: "scroll" }, el("table", { id: "queue" },
      el("thead", {}, el("tr", {}, ["Job", "Status", "Model", "Method", "Created", "Duration", "Trained tokens", "Main metric", "Result"].map((h) => el("th", { scope: "col" }, h)))), tbody)));
}

// ---------------------------------------------------------------------------------- router

const ROUTES = [
  [/^#\/files$/, pageFiles, "files"],
  [/^#\/new$/, pageNew, "new"],
  [/^#\/queue$/, pageQueue, "queue"],
  [/^#\/jobs\/([^/]+)$/, pageJob, "queue"],
  [/^#\/jobs\/([^/]+)\/verdict$/, pageVerdict, "queue"],
  [/^#\/playground(?:\/([^/]+))?$/, pagePlayground, "playground"],
];

async function route() {
  leaving.abort();
  leaving = new AbortController();
  if (key() === null) {
    view.replaceChildren(el("p", { class: "muted" }, "Enter an API key to start."));
    askKey();
    return;
  }
  const hash = location.hash || "#/files";
  const found = ROUTES.find(([re]) => re.test(hash));
  if (!found) {
    location.hash = "#/files";
    return;
  }
  const [re, page, nav] = found;
  const args = (re.exec(hash) || []).slice(1).filter((a) => a !== undefined).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  view.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  view.dataset.page = page.name;
  try {
    await page(...args);
  } catch (e) {
    if (quiet(e)) return;
    view.replaceChildren(el("p", { class: "bad card", role: "alert" }, e.message));
  }
}

window.addEventListener("hashchange", () => {
  route();
  view.focus({ preventScroll: true });
});
route();
