// The dashboard: one page per hash route (#/jobs, #/jobs/ID, #/models/NAME, #/datasets, #/new,
// #/chat). Pages are built with h(), which sets text (never HTML) so nothing a user uploaded can
// run as markup. All data comes from /v1 and /dashboard/api with the session's API key.

import { api, apiKey, ApiError } from "./api.js";
import { histogram, lineChart } from "./chart.js";

const BUNDLED = "tunesmith/tiny-chat";
const FINISHED = ["succeeded", "failed", "cancelled"];
const STATUSES = ["validating_files", "queued", "running", "paused", ...FINISHED];
const main = document.getElementById("main");
let timers = [];

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "—");
const num = (value, digits = 4) => (typeof value === "number" ? value.toFixed(digits).replace(/\.?0+$/, "") : value ?? "—");
const badge = (status) => h("span", { class: `badge ${status}` }, status);
// A report's verdict status (evaluate/report.py STATUSES) in words, styled like a job's status.
const VERDICTS = { green: "green", amber: "amber", red: "red", not_proven: "not proven" };
const verdict = (status) => h("span", { class: `badge verdict ${status}` }, VERDICTS[status] ?? String(status).replace(/_/g, " "));
const jobLink = (id) => h("a", { href: `#/jobs/${id}` }, id);
const modelLink = (name) => h("a", { href: `#/models/${encodeURIComponent(name)}` }, name);
const table = (head, rows, attrs = {}) =>
  h("table", attrs, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
const keyValues = (pairs, attrs = {}) =>
  h("table", { class: "kv", ...attrs }, h("tbody", {}, pairs.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
const errorBox = (message) => h("p", { class: "error", role: "alert" }, message);

// Polls for the page `show` belongs to, and stops once the user has moved on.
function every(show, ms, work) {
  const id = setInterval(() => (show.generation === generation ? work() : clearInterval(id)), ms);
  timers.push(id);
  return id;
}

// A page shows itself through the `show` it was given: one that finishes loading after the
// user has moved on to another page draws nothing.
let generation = 0;

function shower() {
  const mine = ++generation;
  const show = (...nodes) => {
    if (mine === generation) main.replaceChildren(...nodes);
  };
  show.generation = mine;
  return show;
}

// --- routing ---------------------------------------------------------------------------

const routes = [
  [/^#\/jobs\/([^/]+)$/, jobPage],
  [/^#\/models\/(.+)$/, (show, name) => modelPage(show, decodeURIComponent(name))],
  [/^#\/models$/, modelsPage],
  [/^#\/datasets\/([^/]+)$/, checkPage],
  [/^#\/datasets$/, datasetsPage],
  [/^#\/new$/, newJobPage],
  [/^#\/chat$/, chatPage],
  [/^#\/compare$/, comparePage],
  [/^#\/advice$/, advicePage],
  [/^#\/login$/, loginPage],
  [/^#\/logout$/, () => { apiKey.clear(); location.hash = "#/login"; }],
  [/^#\/jobs$/, jobsPage],
];

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  document.getElementById("logout").hidden = !apiKey.get();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", location.hash.startsWith(a.getAttribute("href")));
  }
  const path = (location.hash || "#/jobs").split("?")[0];
  try {
    for (const [pattern, render] of routes) {
      const match = path.match(pattern);
      if (match) return await render(shower(), ...match.slice(1));
    }
    return await jobsPage(shower());
  } catch (err) {
    failed(err);
  }
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    if (location.hash !== "#/login") sessionStorage.setItem("tunesmith.next", location.hash);
    location.hash = "#/login";
    return;
  }
  main.replaceChildren(errorBox(err.message || String(err)));
}

window.addEventListener("hashchange", route);
route(); // a module script runs once the document is parsed

// --- login -----------------------------------------------------------------------------

function loginPage(show) {
  const input = h("input", { type: "password", name: "key", id: "api-key", placeholder: "tsk-…", required: true, autocomplete: "off" });
  const message = h("p", { class: "muted" }, "This server needs an API key (create one with ",
    h("code", {}, "tunesmith keys create"), "). It is kept for this browser tab only.");
  const form = h("form", { class: "card narrow", id: "login" }, h("h1", {}, "Sign in"), message,
    h("label", {}, "API key", input), h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    try {
      await api("/v1/models");
    } catch (err) {
      apiKey.clear();
      form.append(errorBox(err.status === 401 ? "That key was not accepted." : err.message));
      return;
    }
    location.hash = sessionStorage.getItem("tunesmith.next") || "#/jobs";
    sessionStorage.removeItem("tunesmith.next");
  });
  show(form);
}

// --- jobs ------------------------------------------------------------------------------

async function jobsPage(show) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const status = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const model = h("input", { id: "filter-model", placeholder: "base model contains…", value: params.get("model") || "" });
  const body = h("div", {});
  const load = async () => {
    const query = new URLSearchParams();
    if (status.value) query.set("status", status.value);
    if (model.value.trim()) query.set("model", model.value.trim());
    const { data } = await api(`/dashboard/api/jobs?${query}`);
    body.replaceChildren(data.length ? table(
      ["job", "status", "base model", "progress", "model", "created"],
      data.map((j) => [jobLink(j.id), badge(j.status), j.base_model, progress(j.step, j.total_steps, j.status),
        j.model ? modelLink(j.model) : "—", when(j.created_at)]), { id: "jobs" })
      : h("p", { class: "muted" }, query.size ? "No jobs match these filters."
        : ["No jobs yet. ", h("a", { href: "#/new" }, "Start one.")]));
  };
  status.addEventListener("change", load);
  model.addEventListener("input", load);
  show(h("h1", {}, "Fine-tuning jobs"), h("div", { class: "filters" }, status, model), body);
  await load();
  every(show, 3000, () => load().catch(failed));
}

function progress(step, total, status) {
  const fraction = status === "succeeded" ? 1 : total ? Math.min(1, step / total) : 0;
  return h("span", { class: "progress", title: `${step} of ${total ?? "?"} steps` },
    h("span", { class: "bar" }, h("span", { class: "fill", style: `width:${(fraction * 100).toFixed(1)}%` })),
    h("span", { class: "muted" }, total ? ` ${step}/${total}` : ""));
}

async function jobPage(show, id) {
  const header = h("div", {});
  const chart = h("div", { id: "loss-chart" });
  const events = h("div", {});
  const checkpoints = h("div", {});
  const settings = h("div", {});
  const series = { train: [], valid: [], baseline: [] };
  let last = 0;
  let detail = null;
  show(header, h("section", { class: "card" }, h("h2", {}, "Loss"), chart),
    h("div", { class: "columns" },
      h("section", { class: "card" }, h("h2", {}, "Events"), events),
      h("section", { class: "card" }, h("h2", {}, "Checkpoints"), checkpoints,
        h("h2", {}, "Hyperparameters"), settings)));

  const act = (action) => async () => {
    try {
      await api(`/v1/fine_tuning/jobs/${id}/${action}`, { method: "POST" });
      await refresh();
    } catch (err) {
      header.append(errorBox(err.message));
    }
  };

  const refresh = async () => {
    const [job, more, evs, cks] = await Promise.all([
      api(`/v1/fine_tuning/jobs/${id}`), api(`/dashboard/api/jobs/${id}?after=${last}`),
      api(`/v1/fine_tuning/jobs/${id}/events?limit=50`), api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=20`),
    ]);
    for (const key of Object.keys(series)) {
      for (const point of more.series[key]) {
        // A job resumed from a checkpoint trains some steps again: the new points replace the old.
        while (series[key].length && series[key][series[key].length - 1][0] >= point[0]) series[key].pop();
        series[key].push(point);
      }
    }
    last = more.last_event;
    detail = { ...detail, ...more, total_steps: more.total_steps ?? detail?.total_steps };
    const step = series.train.length ? series.train[series.train.length - 1][0] : 0;
    const running = !FINISHED.includes(job.status);
    const requested = job.tunesmith?.requested_action;
    header.replaceChildren(
      h("h1", {}, "Job ", h("code", {}, job.id), " ", badge(job.status),
        requested ? h("span", { class: "muted", id: "requested" }, ` ${requested} requested: stopping at the next step`) : ""),
      keyValues([
        ["base model", job.model], ["method", job.method.type],
        ["progress", progress(step, detail.total_steps, job.status)],
        ["created", when(job.created_at)], ["finished", when(job.finished_at)],
        ["training file", job.training_file ? h("a", { href: `#/datasets/${job.training_file}` }, job.training_file) : "—"],
        ["tuned model", job.fine_tuned_model ? modelLink(job.fine_tuned_model) : "—"],
        ["report", detail.report.length ? h("a", { href: `#/models/${encodeURIComponent(job.fine_tuned_model || "")}` }, "evaluation report")
          : "no report yet"],
      ], { id: "job-summary" }),
      job.error ? errorBox(`${job.error.code}: ${job.error.message}`) : "",
      h("div", { class: "actions" },
        h("button", { id: "cancel", onclick: act("cancel"), disabled: !running || requested === "cancel" }, "Cancel"),
        h("button", { id: "pause", onclick: act("pause"), disabled: !!requested || !["queued", "running", "validating_files"].includes(job.status) }, "Pause"),
        h("button", { id: "resume", onclick: act("resume"), disabled: job.status !== "paused" }, "Resume")));
    chart.replaceChildren(lineChart([
      { name: "training loss", points: series.train, cls: "train" },
      { name: "validation loss", points: series.valid, cls: "valid" },
      { name: "base model (step 0)", points: series.baseline, cls: "baseline" },
    ]));
    events.replaceChildren(evs.data.length ? h("ol", { class: "events", id: "events" }, evs.data.map((e) =>
      h("li", { class: e.level }, h("span", { class: "muted" }, new Date(e.created_at * 1000).toLocaleTimeString()), " ", e.message)))
      : h("p", { class: "muted" }, "No events yet."));
    checkpoints.replaceChildren(cks.data.length ? table(["step", "train loss", "valid loss", "created"],
      cks.data.map((c) => [c.step_number, num(c.metrics.train_loss), num(c.metrics.valid_loss), when(c.created_at)]))
      : h("p", { class: "muted" }, "No checkpoints yet."));
    const shown = Object.entries(detail.recipe).filter(([k]) => /^(training|adapter|data)\./.test(k) && !/^data\.(train|validation)$/.test(k));
    settings.replaceChildren(keyValues(shown.map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]), { id: "hyperparameters" }));
    return running;
  };
  // A job's status can turn final a moment before its worker writes the last events, so the
  // page keeps polling for a few rounds after it ends.
  let rounds = (await refresh()) ? 0 : 3;
  const timer = every(show, 1500, async () => {
    try {
      rounds = (await refresh()) ? 0 : rounds + 1;
      if (rounds >= 4) clearInterval(timer);
    } catch (err) {
      failed(err);
    }
  });
}

// --- models ----------------------------------------------------------------------------

async function modelsPage(show) {
  const { data } = await api("/v1/models");
  show(h("h1", {}, "Models"), table(["model", "base", "kind", "best validation loss", "created"],
    data.map((m) => m.tunesmith
      ? [modelLink(m.id), m.tunesmith.base_model, m.tunesmith.kind, num(m.tunesmith.best_validation_loss), when(m.created)]
      : [m.id, "(base model)", "—", "—", when(m.created)]), { id: "models" }));
}

const EVALUATION_LABELS = {
  baseline_validation_loss: "base model's validation loss (before training)",
  final_validation_loss: "final validation loss", best_validation_loss: "best validation loss",
  best_step: "best step", final_token_accuracy: "final token accuracy", train_loss: "last training loss",
  steps: "steps", trained_tokens: "trained tokens",
};

async function modelPage(show, name) {
  const m = await api(`/dashboard/api/models/${encodeURIComponent(name)}`);
  const evaluation = Object.entries(m.evaluation || {}).filter(([k]) => k in EVALUATION_LABELS)
    .map(([k, v]) => [EVALUATION_LABELS[k], num(v)]);
  if (m.evaluation?.report?.status) evaluation.unshift(["verdict", verdict(m.evaluation.report.status)]);
  const report = h("div", { id: "report" });
  show(h("h1", {}, "Model ", h("code", {}, m.name)),
    keyValues([["base model", m.base_model], ["kind", m.kind], ["job", m.job ? jobLink(m.job) : "—"],
      ["created", when(m.created_at)], ["aliases", m.aliases.length ? m.aliases.join(", ") : "none"],
      ["datasets", Object.entries(m.datasets).map(([role, id]) => `${role}: ${id}`).join(", ") || "—"]]),
    h("section", { class: "card", id: "evaluation" }, h("h2", {}, "Evaluation"),
      evaluation.length ? keyValues(evaluation) : h("p", { class: "muted" }, "No held-out numbers recorded."),
      h("h3", {}, "Report"), report),
    h("section", { class: "card" }, h("h2", {}, "Lineage"), h("ol", { id: "lineage", class: "lineage" },
      m.lineage.map((a) => h("li", {}, a.name === m.name ? h("strong", {}, a.name) : modelLink(a.name),
        a.deleted ? " (deleted)" : "", " ", h("span", { class: "muted" }, `trained ${when(a.created_at)}`,
          a.evaluation?.best_validation_loss != null ? `, best validation loss ${num(a.evaluation.best_validation_loss)}` : ""))))),
    h("p", {}, h("a", { href: "#/chat", onclick: () => sessionStorage.setItem("tunesmith.chat", m.name) },
      "Compare with the base model in the playground")));
  if (!m.report.length) {
    report.replaceChildren(h("p", { class: "muted", id: "no-report" }, "No report yet: run ",
      h("code", {}, `tunesmith eval ${m.name}`), " to compare against the baselines and check forgetting."));
    return;
  }
  if (m.report.includes("report.json")) {
    report.append(reportSummary(await api(`/dashboard/api/jobs/${m.job}/report.json`)));
  }
  if (m.report.includes("report.html")) {
    const frame = h("iframe", { sandbox: "", class: "report", title: "evaluation report" });
    report.append(h("button", { id: "open-report", onclick: async () => {
      frame.srcdoc = await api(`/dashboard/api/jobs/${m.job}/report.html`);
      report.append(frame);
    } }, "Open the full report"));
  }
}

// The report's JSON is shown as nested tables: its sections (metrics, baselines, forgetting...)
// are whatever `tunesmith eval` wrote, so nothing here depends on their exact names.
function reportSummary(data, depth = 0) {
  if (data === null || typeof data !== "object") return typeof data === "number" ? num(data) : String(data);
  if (Array.isArray(data)) {
    if (data.length > 20) return `${data.length} items`;
    return h("ul", {}, data.map((item) => h("li", {}, reportSummary(item, depth + 1))));
  }
  if (depth > 3) return JSON.stringify(data);
  return keyValues(Object.entries(data).map(([k, v]) => [k, k === "status" && Object.hasOwn(VERDICTS, v) ? verdict(v) : reportSummary(v, depth + 1)]),
    depth === 0 ? { id: "report-summary" } : {});
}

// --- data ------------------------------------------------------------------------------

async function datasetsPage(show) {
  const { files, versions } = await api("/dashboard/api/datasets");
  show(h("h1", {}, "Data"),
    h("section", { class: "card" }, h("h2", {}, "Uploaded files"), files.length
      ? table(["file", "name", "size", "uploaded"], files.map((f) => [
        h("a", { href: `#/datasets/${f.id}` }, f.id), f.filename, `${(f.bytes / 1024).toFixed(1)} KiB`, when(f.created_at)]), { id: "files" })
      : h("p", { class: "muted" }, "Nothing uploaded yet.")),
    h("section", { class: "card" }, h("h2", {}, "Dataset versions trained on"), versions.length
      ? table(["version", "format", "examples", "errors", "warnings", "tokens (mean / p95 / max)", "recorded"],
        versions.map((v) => [v.id, v.format || "—", v.examples, v.errors, v.warnings,
          v.token_stats ? `${num(v.token_stats.mean, 1)} / ${v.token_stats.p95} / ${v.token_stats.max}` : "—", when(v.created_at)]))
      : h("p", { class: "muted" }, "No dataset versions recorded yet.")));
}

async function checkPage(show, fileId, model = BUNDLED) {
  show(h("h1", {}, "Data check of ", h("code", {}, fileId)), h("p", { class: "muted" }, "Checking…"));
  const file = await api(`/v1/files/${fileId}`);
  show(h("h1", {}, "Data check of ", h("code", {}, file.filename)), checkView(await checkFile(fileId, model)));
}

const checkFile = (fileId, model) => api(`/dashboard/api/files/${fileId}/check?model=${encodeURIComponent(model)}`);

function checkView(report) {
  const tokens = report.tokens;
  const rows = report.findings.map((f) => [h("span", { class: `badge ${f.severity}` }, f.severity), f.code,
    h("code", {}, f.where || "—"), f.message, f.fix || ""]);
  return h("div", { id: "check" },
    h("p", { class: report.ok ? "ok" : "error" }, report.ok ? "Ready to train: no errors." :
      `${report.errors} error${report.errors === 1 ? "" : "s"}: fix ${report.errors === 1 ? "it" : "them"} before training.`,
      ` ${report.counts.rows} rows, ${report.counts.examples} usable examples, ${report.warnings} warnings; format ${report.format || "unknown"}.`),
    tokens ? h("section", { class: "card" }, h("h2", {}, "Tokens"),
      keyValues([["per example (mean / median / p95 / max)", `${tokens.mean} / ${tokens.p50} / ${tokens.p95} / ${tokens.max}`],
        ["trained per epoch", `${tokens.trained}${tokens.trained_exact ? "" : " (estimated)"} of ${tokens.total}`],
        ["epochs", tokens.epochs], ["over max length", `${tokens.over_max_length} (max length ${tokens.max_length})`]]),
      report.histogram ? h("div", { id: "histogram" }, histogram(report.histogram.edges, report.histogram.counts)) : "")
      : "",
    rows.length ? h("section", { class: "card" }, h("h2", {}, "Findings"), table(["", "code", "where", "what", "fix"], rows, { id: "findings" })) : "");
}

// --- new job ---------------------------------------------------------------------------

async function newJobPage(show) {
  const { data } = await api("/v1/models");
  const bases = data.filter((m) => !m.tunesmith).map((m) => m.id);
  const file = h("input", { type: "file", id: "training-file", accept: ".jsonl", required: true });
  const base = h("select", { id: "base-model" }, bases.map((b) => h("option", { value: b, selected: b === BUNDLED }, b)),
    h("option", { value: "" }, "another model from the hub…"));
  const hub = h("input", { id: "hub-model", placeholder: "org/name", hidden: true });
  base.addEventListener("change", () => { hub.hidden = base.value !== ""; });
  const suffix = h("input", { id: "suffix", placeholder: "e.g. support", maxlength: 64 });
  const epochs = h("input", { id: "epochs", type: "number", min: 1, placeholder: "auto" });
  const steps = h("input", { id: "max-steps", type: "number", min: 1, placeholder: "all" });
  const status = h("div", { id: "form-status" });
  const button = h("button", { type: "submit", id: "start" }, "Check the data and start training");
  const form = h("form", { class: "card", id: "new-job" },
    h("label", {}, "Training data (JSONL: chat messages, prompt/completion or text)", file),
    h("label", {}, "Base model", base, hub), h("label", {}, "Name suffix", suffix),
    h("div", { class: "row" }, h("label", {}, "Epochs", epochs), h("label", {}, "Stop after steps", steps)),
    button, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = base.value || hub.value.trim();
    button.disabled = true;
    try {
      status.replaceChildren(h("p", { class: "muted" }, "Uploading…"));
      const body = new FormData();
      body.append("purpose", "fine-tune");
      body.append("file", file.files[0]);
      const uploaded = await api("/v1/files", { method: "POST", form: body });
      status.replaceChildren(h("p", { class: "muted" }, `Uploaded ${uploaded.id}; checking the data with ${model}'s tokenizer…`));
      const report = await checkFile(uploaded.id, model);
      if (!report.ok) {
        status.replaceChildren(checkView(report));
        return;
      }
      const set = {};
      if (steps.value) set["training.max_steps"] = Number(steps.value);
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: {
        model, training_file: uploaded.id, suffix: suffix.value.trim() || undefined,
        hyperparameters: { n_epochs: epochs.value ? Number(epochs.value) : "auto" },
        tunesmith: { set },
      } });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return failed(err);
      status.replaceChildren(errorBox(err.message));
    } finally {
      button.disabled = false;
    }
  });
  show(h("h1", {}, "Start a fine-tuning job"), form);
}

// --- playground ------------------------------------------------------------------------

async function chatPage(show) {
  const { data } = await api("/v1/models");
  const names = data.map((m) => m.id);
  const tuned = data.filter((m) => m.tunesmith);
  const wanted = sessionStorage.getItem("tunesmith.chat");
  const right = wanted && names.includes(wanted) ? wanted : tuned.length ? tuned[tuned.length - 1].id : BUNDLED;
  const rightBase = data.find((m) => m.id === right)?.tunesmith?.base_model || BUNDLED;
  const pick = (id, chosen) => h("select", { id }, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  const sides = [
    { select: pick("left-model", names.includes(rightBase) ? rightBase : BUNDLED), out: h("div", { class: "reply", id: "left-reply" }) },
    { select: pick("right-model", right), out: h("div", { class: "reply", id: "right-reply" }) },
  ];
  const prompt = h("textarea", { id: "prompt", rows: 3, placeholder: "Ask both models the same thing…", required: true });
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: 1, max: 1024, value: 64 });
  const form = h("form", { class: "card", id: "chat" }, h("label", {}, "Prompt", prompt),
    h("div", { class: "row" }, h("label", {}, "Max tokens", maxTokens), h("button", { type: "submit", id: "send" }, "Ask both")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await Promise.all(sides.map(async ({ select, out }) => {
      out.replaceChildren(h("p", { class: "muted" }, "Generating…"));
      const started = performance.now();
      try {
        const reply = await api("/v1/chat/completions", { method: "POST", json: {
          model: select.value, messages: [{ role: "user", content: prompt.value }],
          max_tokens: Number(maxTokens.value) || 64, temperature: 0, seed: 0,
        } });
        out.replaceChildren(h("p", { class: "answer" }, reply.choices[0].message.content || "(empty reply)"),
          h("p", { class: "muted" }, `${reply.usage.completion_tokens} tokens in ${((performance.now() - started) / 1000).toFixed(1)} s`));
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return failed(err);
        out.replaceChildren(errorBox(err.message));
      }
    }));
  });
  show(h("h1", {}, "Playground: base and tuned side by side"), form,
    h("div", { class: "columns" }, sides.map(({ select, out }) => h("section", { class: "card" }, select, out))));
}

// --- comparing runs ----------------------------------------------------------------------

// N runs side by side: their validation and training curves overlaid, their metrics, and the
// recipe keys whose values differ. The runs are chosen here and kept in the hash (#/compare?jobs=A,B).
async function comparePage(show) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const chosen = (params.get("jobs") || "").split(",").filter(Boolean);
  const { data } = await api("/dashboard/api/jobs?limit=50");
  const picks = h("div", { id: "compare-picks", class: "picks" }, data.map((j) =>
    h("label", {}, h("input", { type: "checkbox", value: j.id, checked: chosen.includes(j.id) }),
      ` ${j.id} `, badge(j.status), j.suffix ? ` ${j.suffix}` : "")));
  const go = h("button", { id: "compare-go", type: "button", onclick: () => {
    const ids = [...picks.querySelectorAll("input:checked")].map((i) => i.value);
    location.hash = `#/compare?jobs=${ids.join(",")}`;
  } }, "Compare");
  const body = h("div", { id: "comparison" });
  show(h("h1", {}, "Compare runs"), h("section", { class: "card" }, picks, go), body);
  if (chosen.length < 2) {
    body.append(h("p", { class: "muted" }, "Pick two or more jobs to compare."));
    return;
  }
  const result = await api(`/dashboard/api/compare?jobs=${encodeURIComponent(chosen.join(","))}`);
  const runs = result.runs;
  const label = (i) => `run ${i + 1}`;
  const curves = (kind) => runs.map((r, i) => ({ name: `${label(i)} ${kind}`, points: r.series[kind === "validation" ? "valid" : "train"], cls: `run${i % 8}` }));
  const interval = (m) => (m && typeof m.loss === "number" ? `${num(m.loss)} (${num(m.low)}–${num(m.high)})` : "—");
  const graders = [...new Set(runs.flatMap((r) => Object.keys(r.metrics.heldout?.scores || {})))];
  const metrics = table(["run", "job", "status", "steps", "final training loss", "best validation loss", "held-out loss (95%)", ...graders],
    runs.map((r, i) => [label(i), jobLink(r.id), badge(r.status), r.metrics.steps, num(r.metrics.final_train_loss),
      num(r.metrics.best_validation_loss), interval(r.metrics.heldout),
      ...graders.map((g) => { const s = r.metrics.heldout?.scores?.[g]; return s ? `${num(s.value, 3)} (${num(s.low, 3)}–${num(s.high, 3)})` : "—"; })]),
    { id: "compare-metrics" });
  const differences = result.differences.length
    ? table(["recipe key", ...runs.map((_, i) => label(i))],
      result.differences.map((d) => [d.key, ...d.values.map((v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v)))]),
      { id: "compare-differences" })
    : h("p", { class: "muted", id: "compare-differences" }, "The recipes are the same.");
  body.append(
    h("section", { class: "card" }, h("h2", {}, "Validation loss"), h("div", { id: "compare-chart" }, lineChart(curves("validation")))),
    h("section", { class: "card" }, h("h2", {}, "Training loss"), h("div", { id: "compare-train-chart" }, lineChart(curves("training")))),
    h("section", { class: "card" }, h("h2", {}, "Metrics"), metrics),
    h("section", { class: "card" }, h("h2", {}, "Recipe differences"), differences));
}

// --- advice before training --------------------------------------------------------------

// What `tunesmith advise` (or POST /v1/advice) measured and recommended, newest first: each
// prompting system's held-out numbers with intervals, the cost estimate and the evidence.
async function advicePage(show) {
  const { data } = await api("/v1/advice?limit=20");
  if (!data.length) {
    show(h("h1", {}, "Advice"), h("p", { class: "muted" }, "No advice yet: run ",
      h("code", {}, "tunesmith advise DATA.jsonl"), " or POST /v1/advice."));
    return;
  }
  const interval = (v, key = "value") => (v && typeof v[key] === "number" ? `${num(v[key], 3)} (${num(v.low, 3)}–${num(v.high, 3)})` : "—");
  const cards = data.map((a) => {
    const graders = [...new Set(Object.values(a.systems || {}).flatMap((s) => Object.keys(s.scores || {})))];
    const systems = table(["system", "held-out loss", ...graders], Object.entries(a.systems || {}).map(([name, s]) =>
      [name, interval(s.loss, "loss"), ...graders.map((g) => interval(s.scores[g]))]));
    const cost = a.cost || {};
    return h("section", { class: "card advice", "data-advice": a.id },
      h("h2", {}, h("span", { class: `badge ${a.recommendation}` }, a.recommendation.replace(/_/g, " ")), ` ${a.model}`),
      keyValues([["dataset", a.dataset_id], ["held-out examples", a.examples], ["recorded", when(a.created_at)],
        ["fine-tuning cost", `${cost.train_examples} examples × ${cost.epochs} epochs = ${cost.tokens} tokens in ${cost.total_steps} steps, about ${num(cost.estimated_seconds, 0)} s here`]]),
      h("p", { class: "reason" }, a.reason), systems,
      h("ul", { class: "evidence" }, (a.evidence || []).map((line) => h("li", {}, line))));
  });
  show(h("h1", {}, "Advice"), ...cards);
}
