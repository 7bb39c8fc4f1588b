// The mindlens page: every explanation comes from the server's /api (mindlens.cases.run);
// this script only shows it. The view's state lives in the URL hash, so a link reproduces it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { model: "", model2: "", image: "", target: "", a: "gradcam", b: "",
                opacity: 80, top: 100 };
let upload = null;      // {image: Blob, name}
let maskBlob = null;
let methods = [];
let models = [];
const jobs = { a: null, b: null };
const shown = { a: null, b: null };   // the map shown in each panel

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(state)) if (p.has(k)) state[k] = p.get(k);
  state.opacity = Number(state.opacity); state.top = Number(state.top);
}
function syncControls() {
  const set = (id, v) => { const e = document.getElementById(id); if (e) e.value = v; };
  set("model", state.model); set("model2", state.model2); set("method-a", state.a);
  set("method-b", state.b); set("opacity", state.opacity); set("toppct", state.top);
  $("#toppct-val").textContent = state.top;
}
function writeHash() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== "" && v !== null) p.set(k, v);
  history.replaceState(null, "", "#" + p.toString());
}
function say(text) { $("#status").textContent = text || ""; }

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return r;
}

function form(method, model) {
  const f = new FormData();
  if (upload) f.append("image", upload.image, upload.name);
  else f.append("image_id", state.image);
  if (maskBlob) f.append("mask", maskBlob, "mask.png");
  f.append("method", method);
  f.append("model", model || state.model);
  if (state.target !== "") f.append("target", state.target);
  return f;
}

function haveImage() { return upload !== null || state.image !== ""; }
function isSlow(name) { const m = methods.find((x) => x.name === name); return m && m.slow; }

// -- one column per model: decision, classes, verdict, trusted picture --------------------
function renderCase(col, res) {
  col.replaceChildren();
  const text = document.createElement("div");
  text.className = "text";
  const h = document.createElement("h2");
  h.textContent = res.model_title || res.model;
  const dec = document.createElement("p");
  dec.className = "decision";
  dec.textContent = res.decision.sentence;
  text.append(h, dec);
  const list = document.createElement("ul");
  list.className = "classes";
  const explained = res.maps.length ? res.maps[0].target : null;
  for (const c of res.classes) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.index = c.index;
    if (c.index === explained) b.classList.add("sel");
    const name = document.createElement("span"); name.textContent = c.label;
    const bar = document.createElement("span"); bar.className = "bar";
    bar.style.width = `${c.probability >= 0.005 ? Math.max(1, c.probability * 100) : 0}%`;  // no bar for 0.0%
    const p = document.createElement("span"); p.textContent = `${(c.probability * 100).toFixed(1)}%`;
    b.title = `explain “${c.label}”`;
    b.append(name, bar, p);
    b.addEventListener("click", () => { state.target = String(c.index); refresh(); });
    li.append(b); list.append(li);
  }
  text.append(list);
  if (res.verdict) {
    for (const ban of res.verdict.banners) {
      const d = document.createElement("p"); d.className = "banner"; d.textContent = ban.text; text.append(d);
    }
    const v = document.createElement("p");
    v.className = "verdict"; v.textContent = res.verdict.sentence;
    text.append(v);
  }
  col.append(text);
  if (res.trusted_picture) {
    const t = document.createElement("div"); t.className = "trusted";
    const img = document.createElement("img");
    img.src = res.trusted_picture.png; img.alt = "the trusted picture";
    const lg = document.createElement("p"); lg.className = "legend";
    const m = res.maps[0];
    lg.textContent = `${res.trusted_picture.evidence_colour} outline: the most relevant part for “${m.label}” (${m.title})`
      + (res.trusted_picture.marks_colour ? `; ${res.trusted_picture.marks_colour}: the expert's marks` : "")
      + `. Why ${m.title}: ${res.trusted_why}.`;
    t.append(img, lg); col.append(t);
  }
  if (methods.some((x) => x.name === "mace") && state.a !== "mace" && state.b !== "mace") {
    const b = document.createElement("button");
    b.type = "button"; b.className = "show-concepts";
    b.textContent = "show the concepts the model learnt (MACE)";
    b.addEventListener("click", () => {
      state.b = "mace"; syncControls(); writeHash(); b.remove();
      explainPanel("b").catch((x) => say(x.message));
    });
    text.append(b);
  }
}

// -- map panels --------------------------------------------------------------------------
function decode(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function drawMap(panel, res) {
  const m = res.maps[0];
  const values = decode(m.values);
  shown[panel.id] = { map: m, values, strength: strength(values, m.signed), image: res.image };
  const stack = $(".stack", panel);
  stack.hidden = false;
  $(".base", stack).src = res.image;
  stack.classList.add("quiet");   // a gray ground: the photo's colours are not the map's (as the report)
  paint(panel);
  renderConcepts(panel, m.concepts);
  $(".caption", panel).textContent = `${m.title} for “${m.label}”` +
    (m.probability !== null ? ` (${(m.probability * 100).toFixed(1)}%)` : "") +
    `; computed at ${m.native_shape.join("×")}` + (res.cached ? " (cached)" : "");
  $(".key", panel).textContent = m.signed
    ? `Red: evidence for “${m.label}”; blue: against it.`
    : `Yellow: most relevant for “${m.label}”; purple: less.`;
  $(".key", panel).textContent += " Where the map is near zero the photo shows through.";
}

// the report's concept panel (mindlens.report.concept_panel), sent as JSON with MACE maps
function renderConcepts(panel, cp) {
  const box = $(".concepts", panel);
  box.replaceChildren();
  box.hidden = !cp;
  if (!cp) return;
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const head = el("p");
  head.append(el("b", "", `Concepts behind “${cp.label}”: `), cp.summary);
  box.append(head);
  for (const c of cp.concepts) {
    const row = el("div", "concept");
    const region = el("img", "region");
    region.src = c.region; region.alt = `where concept ${c.rank} is found`;
    const info = el("div");
    const pct = Math.round(100 * Math.abs(c.share));
    const bar = el("div", "cbar");
    const fill = el("span", c.share < 0 ? "against" : "");
    fill.style.width = `${(100 * Math.abs(c.share)).toFixed(1)}%`;
    bar.append(fill);
    info.append(el("div", "small", `Concept ${c.rank}`), el("div", "share", `${pct}%`), bar,
      el("div", "small", `of the evidence, ${c.share < 0 ? "against" : "for"} “${cp.label}”` +
        (c.found ? "" : "; not found in this image")));
    row.append(region, info);
    if (c.prototypes.length) {
      const protos = el("div", "protos");
      for (const src of c.prototypes) { const i = el("img"); i.src = src; i.alt = "training patch"; protos.append(i); }
      const wrap = el("div");
      wrap.append(protos, el("div", "small", "Training patches where this concept mattered most"));
      row.append(wrap);
    }
    box.append(row);
  }
  const tail = [cp.fidelity, cp.agreement].filter(Boolean).join(" ");
  if (tail) box.append(el("p", "small", tail));
}

// how strongly each pixel speaks, in [0, 1], on the scale the colours use (the 99.5th
// percentile is the top): |value| for signed maps, above the minimum otherwise
function strength(values, signed) {
  const n = values.length;
  const a = new Float32Array(n);
  let lo = Infinity;
  for (let i = 0; i < n; i++) { a[i] = signed ? Math.abs(values[i]) : values[i]; if (a[i] < lo) lo = a[i]; }
  if (signed) lo = 0;
  const sorted = Float32Array.from(a).sort();
  const top = sorted[Math.min(n - 1, Math.floor(0.995 * (n - 1)))];
  const out = new Float32Array(n);
  if (!(top > lo)) return out;
  for (let i = 0; i < n; i++) out[i] = Math.max(0, Math.min(1, (a[i] - lo) / (top - lo)));
  return out;
}

function paint(panel) {
  const s = shown[panel.id];
  if (!s) return;
  const canvas = $(".heat", panel);
  canvas.style.opacity = String(state.opacity / 100);
  const [h, w] = s.map.shape;
  const img = new Image();
  img.onload = () => {
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, w, h);
    const data = ctx.getImageData(0, 0, w, h);
    // the photo shows through where the map is weak: alpha follows the strength
    for (let i = 0; i < s.values.length; i++) data.data[4 * i + 3] = Math.round(255 * Math.min(1, 2 * s.strength[i]));
    if (state.top < 100) {
      const sorted = Float32Array.from(s.values).sort();
      const k = Math.max(0, Math.min(sorted.length - 1, Math.floor(sorted.length * (1 - state.top / 100))));
      const thr = sorted[k];
      for (let i = 0; i < s.values.length; i++) if (!(s.values[i] >= thr)) data.data[4 * i + 3] = 0;
    }
    ctx.putImageData(data, 0, 0);
    canvas.dataset.painted = `${state.opacity}:${state.top}`;
  };
  img.src = s.map.png;
}

async function explainPanel(key) {
  const panel = $(`#panel-${key}`);
  const name = state[key];
  if (jobs[key]) { cancelJob(key); }
  if (!name || !haveImage()) { if (key === "b") { $(".stack", panel).hidden = true; shown.b = null; $(".caption", panel).textContent = ""; } return null; }
  $(".caption", panel).textContent = `computing ${name}…`;
  if (!isSlow(name)) {
    const res = await (await api("/api/explain", { method: "POST", body: form(name) })).json();
    drawMap(panel, res);
    return res;
  }
  const prog = $(".progress", panel);
  prog.hidden = false;
  let job = await (await api("/api/jobs", { method: "POST", body: form(name) })).json();
  jobs[key] = job.id;
  while (job.state === "queued" || job.state === "running") {
    const p = $("progress", prog);
    if (job.progress !== null) p.value = job.progress; else p.removeAttribute("value");
    $(".ptext", prog).textContent = jobText(job);
    await new Promise((r) => setTimeout(r, 400));
    if (jobs[key] !== job.id) return null;   // cancelled or replaced
    job = await (await api(`/api/jobs/${job.id}`)).json();
  }
  prog.hidden = true;
  jobs[key] = null;
  if (job.state !== "done") { $(".caption", panel).textContent = `${name}: ${job.state} ${job.error || ""}`; return null; }
  drawMap(panel, job.result);
  return job.result;
}

function duration(s) { return s < 90 ? `${Math.max(1, Math.ceil(s))} s` : `${Math.round(s / 60)} min`; }

// what a slow job has done and how long it will take (estimate_s: the whole job, eta_s: left)
function jobText(job) {
  const est = job.estimate_s !== null && job.estimate_s !== undefined;
  return `${job.state}: ${job.forward_passes} images through the model` +
    (job.eta_s !== null ? `, about ${duration(job.eta_s)} left` : "") +
    (est ? ` (expected to take about ${duration(job.estimate_s)} in all)`
      : "; no time estimate yet (this method's first run on this model measures it)");
}

function cancelJob(key) {
  const id = jobs[key];
  jobs[key] = null;
  const panel = $(`#panel-${key}`);
  $(".progress", panel).hidden = true;
  $(".caption", panel).textContent = "cancelled";
  if (id) api(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => {});
}

// -- the expert's marks drawn on the page: white strokes on black become the mask ------------
let lastImage = null;   // data URI of the image being explained
function setupDrawing() {
  const canvas = $("#marks");
  const ctx = canvas.getContext("2d");
  let down = false;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  const dot = (e) => { const [x, y] = at(e); ctx.fillStyle = "rgba(0,255,120,0.8)"; ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.fill(); };
  canvas.addEventListener("pointerdown", (e) => { down = true; dot(e); });
  canvas.addEventListener("pointermove", (e) => { if (down) dot(e); });
  window.addEventListener("pointerup", () => { down = false; });
  $("#draw").addEventListener("click", () => { $("#drawing").hidden = false; canvas.style.backgroundImage = `url("${lastImage}")`; });
  $("#clear-marks").addEventListener("click", () => ctx.clearRect(0, 0, canvas.width, canvas.height));
  $("#close-marks").addEventListener("click", () => { $("#drawing").hidden = true; });
  $("#use-marks").addEventListener("click", () => {
    const out = document.createElement("canvas");
    out.width = canvas.width; out.height = canvas.height;
    const o = out.getContext("2d");
    o.fillStyle = "#000"; o.fillRect(0, 0, out.width, out.height);
    o.drawImage(canvas, 0, 0);
    out.toBlob((blob) => { maskBlob = blob; $("#maskname").textContent = "drawn marks"; $("#drawing").hidden = true; refresh(); }, "image/png");
  });
}

// -- the whole view ----------------------------------------------------------------------
async function explainModel(model, col) {
  const trusted = isSlow(state.a) ? "gradcam" : state.a;
  const res = await (await api("/api/explain", { method: "POST", body: form(trusted, model) })).json();
  res.model_title = (models.find((m) => m.name === model) || {}).title;
  if (model === state.model) { lastImage = res.image; $("#draw").disabled = false; }
  renderCase(col, res);
  return res;
}

async function refresh() {
  writeHash();
  markThumb();
  if (!haveImage()) return;
  say("");
  $("#result").hidden = false;
  $("#col-1").hidden = !state.model2;
  const work = [explainModel(state.model, $("#col-0")), explainPanel("a"), explainPanel("b")];
  if (state.model2) work.push(explainModel(state.model2, $("#col-1")));
  const done = await Promise.allSettled(work);
  const failed = done.find((d) => d.status === "rejected");
  if (failed) say(failed.reason.message);
  document.body.dataset.ready = String(Date.now());
}

function markThumb() {
  for (const b of document.querySelectorAll("#thumbs button")) b.classList.toggle("sel", !upload && b.dataset.id === state.image);
}

function takeFile(file) {
  if (!file) return;
  upload = { image: file, name: file.name || "pasted.png" };
  state.image = ""; state.target = "";
  refresh();
}

async function download() {
  const names = [state.a, state.b].filter(Boolean);
  const f = form(state.a);
  f.append("methods", names.join(","));
  say("writing the report…");
  const r = await api("/api/report", { method: "POST", body: f });
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "mindlens-report.html";
  a.id = "report-link";
  document.body.append(a);
  a.click();
  say("report downloaded");
}

async function start() {
  readHash();
  [models, methods] = await Promise.all([
    api("/api/models").then((r) => r.json()), api("/api/methods").then((r) => r.json())]);
  const images = await (await api("/api/images")).json();
  for (const m of models) {
    for (const sel of [$("#model"), $("#model2")]) {
      const o = document.createElement("option"); o.value = m.name; o.textContent = m.title; sel.append(o);
    }
  }
  $("#model2-wrap").hidden = models.length < 2;
  if (!state.model) state.model = models[0].name;
  $("#model").value = state.model; $("#model2").value = state.model2;
  for (const m of methods) {
    for (const sel of [$("#method-a"), $("#method-b")]) {
      const o = document.createElement("option"); o.value = m.name;
      o.textContent = m.title + (m.slow ? " (slow)" : ""); sel.append(o);
    }
  }
  $("#method-a").value = state.a; $("#method-b").value = state.b;
  const labels = $("#labels");
  for (const l of models[0].labels) { const o = document.createElement("option"); o.value = l; labels.append(o); }
  for (const im of images) {
    const b = document.createElement("button"); b.type = "button"; b.dataset.id = im.id; b.title = im.name;
    const img = document.createElement("img"); img.alt = im.name;
    const cap = document.createElement("span"); cap.textContent = im.name;
    b.append(img, cap);
    api(im.thumb).then((r) => r.blob()).then((bl) => { img.src = URL.createObjectURL(bl); });
    b.addEventListener("click", () => { upload = null; maskBlob = null; $("#maskname").textContent = ""; state.image = im.id; state.target = ""; refresh(); });
    $("#thumbs").append(b);
  }
  syncControls();
  $("#model").addEventListener("change", (e) => { state.model = e.target.value; refresh(); });
  $("#model2").addEventListener("change", (e) => { state.model2 = e.target.value; refresh(); });
  $("#method-a").addEventListener("change", (e) => { state.a = e.target.value; writeHash(); explainPanel("a").catch((x) => say(x.message)); });
  $("#method-b").addEventListener("change", (e) => { state.b = e.target.value; writeHash(); explainPanel("b").catch((x) => say(x.message)); });
  for (const key of ["a", "b"]) $(`#panel-${key} .cancel`).addEventListener("click", () => cancelJob(key));
  $("#opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value); writeHash(); paint($("#panel-a")); paint($("#panel-b")); });
  $("#toppct").addEventListener("input", (e) => { state.top = Number(e.target.value); $("#toppct-val").textContent = state.top; writeHash(); paint($("#panel-a")); paint($("#panel-b")); });
  $("#class-search").addEventListener("change", (e) => { if (e.target.value) { state.target = e.target.value; refresh(); } });
  $("#download").addEventListener("click", () => download().catch((x) => say(x.message)));
  $("#file").addEventListener("change", (e) => takeFile(e.target.files[0]));
  $("#maskfile").addEventListener("change", (e) => { maskBlob = e.target.files[0] || null; $("#maskname").textContent = maskBlob ? maskBlob.name : ""; refresh(); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); takeFile(e.dataTransfer.files[0]); });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) takeFile(item.getAsFile());
  });
  setupDrawing();
  window.addEventListener("hashchange", () => { readHash(); syncControls(); refresh(); });
  document.body.dataset.loaded = "1";
  await refresh();
}

start().catch((e) => say(e.message));
