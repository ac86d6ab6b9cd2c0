// erniekit webui: one page over the JSON API in erniekit/webui/app.py. No framework, no build step.
"use strict";
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid);
  return node;
};

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw Object.assign(new Error(data.error || `HTTP ${response.status}`), { key: data.key });
  return data;
}

// ---------------------------------------------------------------------------------------------- tabs
for (const button of document.querySelectorAll(".tab")) {
  button.addEventListener("click", () => showTab(button.dataset.panel));
}
function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.panel === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === `panel-${name}`);
  if (name !== "train") refreshModels();
}
$("#lang").value = LANG;
$("#lang").addEventListener("change", () => {
  LANG = $("#lang").value;
  localStorage.setItem("erniekit.lang", LANG);
  applyLanguage();
  renderRuns();
});

// ---------------------------------------------------------------------------------------------- train
const form = { recipe: null, fields: [], edits: {}, ok: true, asked: 0 };

async function loadRecipes() {
  const data = await api("/api/recipes");
  const select = $("#recipe");
  select.replaceChildren();
  const shipped = el("optgroup", { label: t("train.shipped") });
  for (const r of data.shipped) shipped.append(el("option", { value: r.name, text: r.name, "data-about": r.about }));
  select.append(shipped);
  if (data.local.length) {
    const local = el("optgroup", { label: t("train.local") });
    for (const path of data.local) local.append(el("option", { value: path, text: path }));
    select.append(local);
  }
  select.value = data.shipped.some((r) => r.name === "ernie4_5/debug_sft") ? "ernie4_5/debug_sft" : select.options[0].value;
  await pickRecipe();
}
$("#recipe").addEventListener("change", pickRecipe);

async function pickRecipe() {
  form.recipe = $("#recipe").value;
  form.edits = {};
  const option = $("#recipe").selectedOptions[0];
  $("#recipe-about").textContent = option ? option.dataset.about || "" : "";
  $("#plan").textContent = "";
  await validate(true);
}

function overrides() {
  return Object.entries(form.edits).map(([key, raw]) => `${key}=${raw}`);
}

function shellQuote(s) { return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`; }

function showCli() {
  const nproc = parseInt($("#nproc").value, 10) || 1;
  const parts = ["erniekit", "train", form.recipe, ...overrides(), ...(nproc > 1 ? ["--nproc", String(nproc)] : [])];
  $("#cli").textContent = parts.map(shellQuote).join(" ");
}
$("#nproc").addEventListener("input", showCli);

async function validate(rebuild) {
  // answers can arrive out of order: only the newest question's counts. Start stays as it was meanwhile
  // (a click on Start blurs the field it follows, which asks again), and the server checks again anyway.
  const asked = ++form.asked;
  let data;
  try {
    data = await api("/api/recipe", { recipe: form.recipe, overrides: overrides() });
  } catch (e) {
    if (asked === form.asked) $("#form-error").textContent = e.message;
    return;
  }
  if (asked !== form.asked) return;
  for (const node of document.querySelectorAll(".field.invalid")) {
    node.classList.remove("invalid");
    node.querySelector(".field-error").textContent = "";
  }
  $("#form-error").textContent = "";
  form.ok = data.ok;
  $("#start").disabled = !data.ok;
  if (!data.ok) {
    const row = data.key && document.querySelector(`.field[data-key="${CSS.escape(data.key)}"]`);
    if (row) {
      row.classList.add("invalid");
      row.querySelector(".field-error").textContent = data.error;
    } else {
      $("#form-error").textContent = data.error;
    }
  } else {
    const keys = data.fields.map((f) => f.key).join(" ");
    if (rebuild || keys !== form.fields.map((f) => f.key).join(" ")) renderForm(data.fields);  // method.name changed the fields
    form.fields = data.fields;
  }
  showCli();
}

function rawValue(f, input) {
  if (f.kind === "bool") return input.checked ? "true" : "false";
  const text = input.value;
  if (text.trim() === "" && f.optional) return "null";
  if (f.kind === "text" || f.kind === "choice") {
    const choice = f.choices ? f.choices.find((c) => String(c) === text) : undefined;
    return JSON.stringify(choice !== undefined ? choice : text);
  }
  return text;  // numbers and YAML go to the CLI's parser as typed
}

function renderForm(fields) {
  const root = $("#form");
  root.replaceChildren();
  const boxes = {};
  const parentOf = (key) => boxes[key.split(".").slice(0, -1).join(".")] || root;
  for (const f of fields) {
    if (f.kind === "section") {
      const box = el("details", { class: "section", "data-section": f.key });
      if (["model", "data", "optim", "train", "method", "lora"].includes(f.key)) box.open = true;
      box.append(el("summary", { text: f.key, title: f.doc }));
      if (f.doc) box.append(el("p", { class: "muted doc", text: f.doc }));
      parentOf(f.key).append(box);
      boxes[f.key] = box;
      continue;
    }
    const id = `f-${f.key.replace(/[^\w]/g, "_")}`;
    let input;
    if (f.kind === "bool") {
      input = el("input", { type: "checkbox", id, name: f.key });
      input.checked = !!f.value;
    } else if (f.kind === "choice") {
      input = el("select", { id, name: f.key });
      if (f.optional) input.append(el("option", { value: "", text: "null" }));
      for (const c of f.choices) input.append(el("option", { value: String(c), text: String(c) }));
      input.value = f.value === null ? "" : String(f.value);
    } else {
      input = el("input", { id, name: f.key, type: "text", spellcheck: "false" });
      input.value = f.value === null || f.value === undefined ? "" : String(f.value);
      if (f.kind === "int" || f.kind === "float") input.inputMode = "decimal";
    }
    const row = el("div", { class: "field", "data-key": f.key, title: f.doc },
      el("label", { for: id, text: f.key.split(".").slice(-1)[0] }), input,
      el("span", { class: "type muted", text: f.type }),
      el("div", { class: "doc muted", text: f.doc }),
      el("div", { class: "field-error error" }));
    if (form.edits[f.key] !== undefined) row.classList.add("changed");
    input.addEventListener("change", () => {
      form.edits[f.key] = rawValue(f, input);
      row.classList.add("changed");
      validate(false);
    });
    parentOf(f.key).append(row);
  }
  filterFields();
}

function filterFields() {
  const q = $("#field-filter").value.trim().toLowerCase();
  for (const row of document.querySelectorAll("#form .field")) row.hidden = !!q && !row.dataset.key.toLowerCase().includes(q);
  for (const box of document.querySelectorAll("#form details.section")) {
    box.hidden = !!q && !box.querySelector(".field:not([hidden])");
    if (q && !box.hidden) box.open = true;
  }
}
$("#field-filter").addEventListener("input", filterFields);

$("#plan-btn").addEventListener("click", async () => {
  $("#plan").textContent = "…";
  try {
    $("#plan").textContent = (await api("/api/plan", { recipe: form.recipe, overrides: overrides() })).text;
  } catch (e) { $("#plan").textContent = e.message; }
});

$("#start").addEventListener("click", async () => {
  $("#launch-error").textContent = "";
  try {
    const job = await api("/api/train", { recipe: form.recipe, overrides: overrides(), nproc: parseInt($("#nproc").value, 10) || 1 });
    selectRun(job.run_dir);
    await refreshRuns();
  } catch (e) { $("#launch-error").textContent = e.message; }
});

// ---------------------------------------------------------------------------------------------- runs
const view = { runs: [], selected: null, since: 0, records: [], detail: null };

async function refreshRuns() {
  try { view.runs = (await api("/api/runs")).runs; } catch (e) { return; }
  renderRuns();
}

function renderRuns() {
  const body = $("#runs tbody");
  body.replaceChildren();
  for (const r of view.runs) {
    const p = r.progress;
    const row = el("tr", { "data-dir": r.dir, class: r.dir === view.selected ? "selected" : "", onclick: () => selectRun(r.dir) },
      el("td", { text: r.dir }),
      el("td", { class: `status ${r.status}`, "data-status": r.status, text: t(`status.${r.status}`) }),
      el("td", { text: p ? `${p.step} / ${p.total_steps}` : "" }),
      el("td", { text: String(r.checkpoints) }));
    body.append(row);
  }
}

function selectRun(dir) {
  if (view.selected !== dir) {
    view.selected = dir;
    view.since = 0;
    view.records = [];
  }
  $("#run").hidden = false;
  $("#run-title").textContent = dir;
  renderRuns();
  refreshRun();
}

async function refreshRun() {
  if (!view.selected) return;
  const dir = view.selected;
  let d;
  try { d = await api(`/api/run?dir=${encodeURIComponent(dir)}&since=${view.since}`); } catch (e) { $("#run-error").textContent = e.message; return; }
  if (dir !== view.selected) return;
  view.detail = d;
  if (d.metrics.reset) view.records = [];
  view.records.push(...d.metrics.records);
  view.since = d.metrics.next;
  const p = d.progress;
  const fraction = p && p.total_steps ? p.step / p.total_steps : 0;
  $("#progress-bar").style.width = `${Math.round(100 * fraction)}%`;
  $("#progress-text").textContent = p ? `${p.step} / ${p.total_steps} · ${t(`status.${d.status}`)}` : t(`status.${d.status}`);
  $("#stop").disabled = !["running", "starting"].includes(d.status);
  $("#resume").disabled = ["running", "starting", "stopping"].includes(d.status) || !d.checkpoints;
  $("#run-error").textContent = d.error || "";
  $("#log").textContent = d.log || (d.status === "cli" ? t("run.nolog") : "");
  $("#log").scrollTop = $("#log").scrollHeight;
  const list = $("#checkpoints");
  list.replaceChildren();
  for (const c of [...d.checkpoint_list].reverse()) {
    list.append(el("li", { "data-path": c.path }, el("span", { text: c.path }),
      el("button", { class: "small", text: t("run.chat"), onclick: () => chatWith(c.path) }),
      el("button", { class: "small", text: t("run.export"), onclick: () => exportFrom(c.path) })));
  }
  for (const m of d.models) {
    list.append(el("li", { "data-path": m }, el("span", { text: m }),
      el("button", { class: "small", text: t("run.chat"), onclick: () => chatWith(m) })));
  }
  drawCharts(view.records);
}

$("#stop").addEventListener("click", async () => {
  try { await api("/api/run/stop", { dir: view.selected }); } catch (e) { $("#run-error").textContent = e.message; }
  refreshRun();
});
$("#resume").addEventListener("click", async () => {
  try { await api("/api/run/resume", { dir: view.selected }); } catch (e) { $("#run-error").textContent = e.message; }
  refreshRuns();
  refreshRun();
});

// curves: one small SVG per metric family, drawn from metrics.jsonl's records
function chartGroups(records) {
  const keys = new Set();
  for (const r of records) for (const [k, v] of Object.entries(r)) if (typeof v === "number" && !["step", "epoch", "tokens", "tokens_per_sec", "seconds"].includes(k)) keys.add(k);
  const groups = [];
  const losses = ["loss", "eval_loss"].filter((k) => keys.has(k));
  if (losses.length) groups.push({ name: "loss", keys: losses });
  if (keys.has("lr")) groups.push({ name: "lr", keys: ["lr"] });
  const rewards = [...keys].filter((k) => /reward/.test(k)).sort();
  if (rewards.length) groups.push({ name: "reward", keys: rewards });
  for (const k of ["grad_norm", "kl", "accuracy"]) if (keys.has(k)) groups.push({ name: k, keys: [k] });
  return groups;
}

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function drawCharts(records) {
  const root = $("#charts");
  root.replaceChildren();
  for (const g of chartGroups(records)) {
    const W = 320, H = 150, L = 48, B = 20, T = 8, R = 8;
    const series = g.keys.map((k) => records.filter((r) => typeof r[k] === "number").map((r) => [r.step, r[k]]));
    const all = series.flat();
    if (!all.length) continue;
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 += Math.abs(y1) * 0.05 || 1; y0 -= Math.abs(y0) * 0.05 || 1; }
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart");
    svg.dataset.metric = g.name;
    svg.dataset.points = String(series[0].length);
    const text = (x, y, s, anchor = "end") => {
      const node = document.createElementNS(svg.namespaceURI, "text");
      node.setAttribute("x", x); node.setAttribute("y", y); node.setAttribute("text-anchor", anchor);
      node.textContent = s;
      svg.append(node);
    };
    const fmt = (v) => (Math.abs(v) >= 0.01 && Math.abs(v) < 1e4 ? v.toPrecision(3) : v.toExponential(1));
    text(L - 4, T + 8, fmt(y1)); text(L - 4, H - B, fmt(y0));
    text(L, H - 4, String(x0), "start"); text(W - R, H - 4, String(x1));
    const frame = document.createElementNS(svg.namespaceURI, "rect");
    Object.entries({ x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }).forEach(([k, v]) => frame.setAttribute(k, v));
    svg.append(frame);
    series.forEach((points, i) => {
      const line = document.createElementNS(svg.namespaceURI, "polyline");
      line.setAttribute("points", points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
      line.setAttribute("stroke", COLORS[i % COLORS.length]);
      line.setAttribute("data-key", g.keys[i]);
      svg.append(line);
      if (points.length === 1 || g.keys[i] === "eval_loss") for (const [x, y] of points) {
        const dot = document.createElementNS(svg.namespaceURI, "circle");
        dot.setAttribute("cx", sx(x)); dot.setAttribute("cy", sy(y)); dot.setAttribute("r", 2.5); dot.setAttribute("fill", COLORS[i % COLORS.length]);
        svg.append(dot);
      }
    });
    const last = series.map((s, i) => s.length ? `${g.keys[i]} ${fmt(s[s.length - 1][1])}` : "").filter(Boolean).join(" · ");
    root.append(el("figure", {}, svg, el("figcaption", { text: last })));
  }
}

// ---------------------------------------------------------------------------------------------- models
async function refreshModels() {
  let data;
  try { data = await api("/api/models"); } catch (e) { return; }
  const fill = (select, withNone) => {
    const keep = select.value;
    select.replaceChildren();
    if (withNone) select.append(el("option", { value: "", text: t("chat.none") }));
    for (const m of data.models) select.append(el("option", { value: m.path, text: m.label }));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  };
  fill($("#chat-model"), false);
  fill($("#chat-adapter"), true);
  const list = $("#model-list");
  list.replaceChildren(...data.models.map((m) => el("option", { value: m.path })));
  showChatStatus(data.chat);
}

function showChatStatus(c) {
  $("#chat-status").textContent = c.loaded ? `${t("chat.loaded")}: ${c.model}${c.adapters.length ? ` + ${c.adapters.map((a) => a.path).join(", ")}` : ""}` : t("chat.notloaded");
  $("#chat-status").dataset.loaded = c.loaded ? c.model : "";
  $("#image-row").hidden = !(c.loaded && c.vision);
  chat.loaded = c;
}

function chatWith(path) {
  showTab("chat");
  refreshModels().then(() => { $("#chat-model").value = path; loadChatModel(); });
}
function exportFrom(path) {
  showTab("export");
  $("#export-run").value = path;
  $("#export-out").value = `${path.replace(/\/checkpoint-\d+$/, "")}/export-hf`;
}

// ---------------------------------------------------------------------------------------------- chat
const chat = { history: [], loaded: { loaded: false }, image: null, busy: false };

async function loadChatModel() {
  $("#chat-error").textContent = "";
  $("#chat-status").textContent = t("chat.loading");
  const adapter = $("#chat-adapter").value;
  try {
    showChatStatus(await api("/api/chat/load", { model: $("#chat-model").value, adapters: adapter ? [adapter] : [] }));
    chat.history = [];
    $("#chat-log").replaceChildren();
  } catch (e) { $("#chat-error").textContent = e.message; showChatStatus({ loaded: false }); }
}
$("#chat-load").addEventListener("click", loadChatModel);
$("#chat-clear").addEventListener("click", () => { chat.history = []; $("#chat-log").replaceChildren(); });

$("#chat-image").addEventListener("change", async () => {
  const file = $("#chat-image").files[0];
  chat.image = null;
  if (!file) return;
  try {
    const r = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error);
    chat.image = data.path;
  } catch (e) { $("#chat-error").textContent = e.message; }
});

$("#chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
$("#chat-send").addEventListener("click", send);

async function send() {
  const text = $("#chat-input").value.trim();
  if (!text || chat.busy) return;
  $("#chat-error").textContent = "";
  const content = chat.image ? [{ type: "image_url", image_url: { url: chat.image } }, { type: "text", text }] : text;
  const user = { role: "user", content };
  $("#chat-log").append(el("div", { class: "msg user", text }));
  const answer = el("div", { class: "msg assistant", "data-chunks": "0" });
  const thinking = el("div", { class: "reasoning muted" });
  const reply = el("div", { class: "content" });
  answer.append(thinking, reply);
  $("#chat-log").append(answer);
  $("#chat-input").value = "";
  chat.image = null;
  $("#chat-image").value = "";
  const system = $("#system").value.trim();
  const adapter = chat.loaded.adapters && chat.loaded.adapters[0];
  const body = {
    model: adapter ? adapter.name : undefined,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...chat.history, user],
    stream: true,
    temperature: parseFloat($("#temperature").value) || 0,
    top_p: parseFloat($("#top-p").value) || 1,
    top_k: parseInt($("#top-k").value, 10) || 0,
    max_tokens: parseInt($("#max-tokens").value, 10) || 64,
  };
  chat.busy = true;
  $("#chat-send").disabled = true;
  try {
    const response = await fetch("/chat/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data:")) continue;
        const payload = event.slice(5).trim();
        if (payload === "[DONE]") continue;
        const data = JSON.parse(payload);
        if (data.error) throw new Error(data.error.message);
        const delta = (data.choices && data.choices[0] && data.choices[0].delta) || {};
        if (delta.reasoning_content) thinking.textContent += delta.reasoning_content;
        if (delta.content) reply.textContent += delta.content;
        answer.dataset.chunks = String(++chunks);
        $("#chat-log").scrollTop = $("#chat-log").scrollHeight;
      }
    }
    answer.dataset.done = "1";
    chat.history.push({ role: "user", content }, { role: "assistant", content: reply.textContent });
  } catch (e) {
    $("#chat-error").textContent = e.message;
    answer.dataset.done = "error";
  } finally {
    chat.busy = false;
    $("#chat-send").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------- eval, export
const split = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

$("#eval-start").addEventListener("click", async () => {
  $("#eval-error").textContent = "";
  try {
    const job = await api("/api/eval", {
      target: $("#eval-target").value.trim(),
      data: split($("#eval-data").value),
      generation: split($("#eval-generation").value),
      overrides: $("#eval-overrides").value.split("\n").map((s) => s.trim()).filter(Boolean),
    });
    watchJob(job.id, $("#eval-job"));
  } catch (e) { $("#eval-error").textContent = e.message; }
});

$("#export-start").addEventListener("click", async () => {
  $("#export-error").textContent = "";
  try {
    const job = await api("/api/export", {
      run: $("#export-run").value.trim(), out: $("#export-out").value.trim(), to: $("#export-to").value,
      dtype: $("#export-dtype").value || null, merge_lora: $("#export-merge").checked,
    });
    watchJob(job.id, $("#export-job"));
  } catch (e) { $("#export-error").textContent = e.message; }
});

const watched = new Map();
function watchJob(id, box) { watched.set(box, id); refreshJob(box); }

async function refreshJob(box) {
  const id = watched.get(box);
  if (!id) return;
  let j;
  try { j = await api(`/api/job?id=${encodeURIComponent(id)}`); } catch (e) { return; }
  const parts = [el("h3", { text: j.title }), el("code", { class: "cli", text: j.command }),
    el("p", { class: `status ${j.state}`, "data-status": j.state, text: t(`status.${j.state}`) + (j.error ? ` — ${j.error}` : "") })];
  if (j.results) {
    const flat = [];
    const walk = (obj, prefix) => {
      for (const [k, v] of Object.entries(obj)) {
        if (k === "samples" || k === "completions") continue;
        if (v && typeof v === "object" && !Array.isArray(v)) walk(v, `${prefix}${k}.`);
        else if (typeof v !== "object") flat.push([`${prefix}${k}`, v]);
      }
    };
    walk(j.results, "");
    parts.push(el("h4", { text: t("job.scores") }), el("table", { class: "scores" }, ...flat.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(typeof v === "number" ? +v.toFixed(5) : v) })))));
    const samples = findSamples(j.results);
    if (samples.length) {
      parts.push(el("h4", { text: t("job.samples") }));
      for (const s of samples.slice(0, 5)) parts.push(el("pre", { class: "sample", text: JSON.stringify(s, null, 1) }));
    }
  }
  if (j.files) {
    parts.push(el("h4", { text: t("job.files") }), el("ul", { class: "files" }, ...j.files.map((f) => el("li", { text: `${f.path}  (${(f.bytes / 1e6).toFixed(2)} MB)` }))));
  }
  parts.push(el("pre", { class: "log", text: j.log }));
  box.replaceChildren(...parts);
  if (!["starting", "running", "stopping"].includes(j.state)) watched.delete(box);
}

function findSamples(obj) {
  for (const [k, v] of Object.entries(obj || {})) {
    if ((k === "samples" || k === "completions") && Array.isArray(v)) return v;
    if (v && typeof v === "object" && !Array.isArray(v)) { const found = findSamples(v); if (found.length) return found; }
  }
  return [];
}

// ---------------------------------------------------------------------------------------------- start
async function tick() {
  await refreshRuns();
  await refreshRun();
  for (const box of watched.keys()) await refreshJob(box);
}

(async () => {
  applyLanguage();
  try { $("#root").textContent = (await api("/api/info")).root; } catch (e) { $("#form-error").textContent = e.message; }
  await loadRecipes();
  await refreshRuns();
  if (view.runs.length) selectRun(view.runs[0].dir);
  await refreshModels();
  setInterval(tick, 1000);
})();
