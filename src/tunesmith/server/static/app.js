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

// status_details is "line N: field: reason; line M: ...; ... and K more" (server/filecheck.py).
function parseProblems(details) {
  if (!details) return [];
  return details.split(/;\s(?=line \d+: |\.\.\. and \d+ more)/).map((part) => {
    const m = /^line (\d+): (?:([^\s:]+): )?([\s\S]*)$/.exec(part);
    return m ? { line: Number(m[1]), field: m[2] || "", reason: m[3] } : { line: null, field: "", reason: part };
  });
}

function fileReport(file) {
  const box = el("section", { id: "file-report", class: "card", "aria-labelledby": "report-title" });
  box.append(el("h2", { id: "report-title" }, "Validation: ", el("span", { class: "mono", text: file.filename })));
  box.append(el("p", {}, badge(file.status), " ", el("span", { class: "muted" }, `${file.id} · ${fmtBytes(file.bytes)} · ${fmtTime(file.created_at)}`)));
  if (file.status === "processed") {
    box.append(el("p", { class: "ok" }, "Every row is usable training data."));
    return box;
  }
  const problems = parseProblems(file.status_details);
  box.append(el("p", {}, `${problems.length} problem${problems.length === 1 ? "" : "s"} found — the file cannot be used until they are fixed:`));
  box.append(el("table", { id: "problems" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Line"), el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Reason"))),
    el("tbody", {}, problems.map((p) => el("tr", {},
      el("td", { class: "num" }, p.line === null ? "—" : String(p.line)),
      el("td", { class: "mono" }, p.field || "—"),
      el("td", {}, p.reason))))));
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

  const show = (f) => report.replaceChildren(fileReport(f));
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
  function drawHyper() {
    const method = methodBox.querySelector("input:checked").value;
    hyperBox.replaceChildren(el("legend", {}, "Hyperparameters"),
      el("p", { class: "help" }, "Leave a value at auto and the run picks it from your data and model; the job page shows the value it trained with once it starts."));
    for (const name of HYPER[method]) {
      inputs[name] = inputs[name] || el("input", { id: `hp-${name}`, value: "auto", inputmode: "decimal", "aria-describedby": `hp-${name}-help` });
      hyperBox.append(field(`hp-${name}`, name, inputs[name], AUTO_HELP[name]));
    }
    graderField.hidden = method !== "reinforcement";
  }
  methodBox.addEventListener("change", drawHyper);
  drawHyper();

  const error = el("p", { class: "bad", id: "job-error", role: "alert" });
  const form = el("form", { id: "new-job", class: "card" },
    field("job-model", "Base model", model),
    field("job-train", "Training file", train, usable.length ? null : "No validated files yet — upload one on the Files page."),
    field("job-val", "Validation file", val, "Held out: gives validation loss and, after training, the base-vs-tuned verdict."),
    field("job-suffix", "Suffix (optional)", suffix, "Part of the fine-tuned model's name."),
    methodBox, hyperBox, graderField,
    el("section", { class: "estimate", "aria-label": "Estimate" },
      el("h2", {}, "Estimate"),
      el("p", { class: "muted" }, "This server's API has no estimate endpoint yet, so no time is shown before launch. Once the job runs, its page shows the estimated finish the worker reports.")),
    error,
    el("button", { type: "submit", id: "job-submit" }, "Launch job"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const method = methodBox.querySelector("input:checked").value;
    try {
      const hyper = {};
      for (const name of HYPER[method]) hyper[name] = parseHyper(name, inputs[name].value);
      const block = { hyperparameters: hyper };
      if (method === "reinforcement") block.grader = JSON.parse(grader.value);
      const body = { model: model.value, training_file: train.value, method: { type: method, [method]: block } };
      if (val.value) body.validation_file = val.value;
      if (suffix.value.trim()) body.suffix = suffix.value.trim();
      const job = await api("/fine_tuning/jobs", { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (e) {
      error.textContent = e.message;
    }
  });
  view.replaceChildren(el("h1", {}, "New fine-tuning job"), form);
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
  view.replaceChildren(el("h1", {}, "Job ", el("span", { class: "mono", text: job.id })), jobLinks(job.id, "Job"), head, buttons,
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
