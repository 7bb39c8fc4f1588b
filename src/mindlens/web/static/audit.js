// The audit view (/audit): per class, the images placed by their explanations (the 2-D
// picture of the SpRAy embedding), coloured by strategy; a click shows one image with its
// map, or one strategy with its most typical images. Every number comes from the server's
// /api/audits (mindlens.spray); this script only shows it. The view's state lives in the
// URL hash, so a link reproduces it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { audit: "", cls: "", point: "", cluster: "", overlay: "1" };
let view = null;          // the class shown: GET /api/audits/{audit}/classes/{cls}
let pictureUrl = null;    // object URL of the image shown in the detail

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(state)) state[k] = p.has(k) ? p.get(k) : (k === "overlay" ? "1" : "");
}
function writeHash() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== "" && !(k === "overlay" && v === "1")) p.set(k, v);
  history.replaceState(null, "", "#" + p.toString());
}
function say(text) { $("#status").textContent = text || ""; }
function done() { document.body.dataset.ready = String(Date.now()); }
const pct = (x) => `${Math.round(100 * x)}%`;
const enc = encodeURIComponent;
const base = () => `/api/audits/${enc(state.audit)}`;
const classPath = () => `${base()}/classes/${state.cls.split("/").map(enc).join("/")}`;

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok && r.status !== 202) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return r;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
const flagged = (cl) => cl.fixed_location || cl.flags.length > 0;

// -- the audit and its classes -------------------------------------------------------------
async function loadAudit() {
  let s;
  for (;;) {
    const r = await api(base());
    s = await r.json();
    if (r.status !== 202) break;
    say(`computing the audit of ${s.source} (${s.method}, ${s.state})` +
        (s.elapsed_s !== undefined ? `: ${Math.round(s.elapsed_s)} s so far…` : "…"));
    await new Promise((res) => setTimeout(res, 1000));
    if (s.name !== state.audit) return;
  }
  if (s.state === "error") { say(`the audit of ${s.source} failed: ${s.error}`); done(); return; }
  say("");
  $("#head").hidden = false;
  $("#source").textContent = `${s.source} · method ${s.method} · ${s.images} images · ` +
    `strategies found by SpRAy (Lapuschkin et al. 2019): ${s.parameters.affinity}, ${s.parameters.normalisation}` +
    Object.entries(s.skipped).map(([c, why]) => ` · not audited: “${c}”, ${why}`).join("");
  const tabs = $("#classes");
  tabs.replaceChildren();
  for (const c of s.classes) {
    const b = el("button", `${c.name} (${c.images})`);
    b.type = "button"; b.dataset.cls = c.name; b.setAttribute("role", "tab");
    if (c.flags.length) { b.append(" ", el("span", "⚠", "warn")); b.title = `${c.flags.length} flag(s)`; }
    b.addEventListener("click", () => { state.cls = c.name; state.point = ""; state.cluster = ""; loadClass().catch(fail); });
    tabs.append(b);
  }
  if (!s.classes.length) { say("no class of this store had enough images to audit"); done(); return; }
  if (!s.classes.some((c) => c.name === state.cls)) state.cls = s.classes[0].name;
  await loadClass();
}

async function loadClass() {
  writeHash();
  for (const b of document.querySelectorAll("#classes button")) b.classList.toggle("sel", b.dataset.cls === state.cls);
  const asked = classPath();
  const answer = await (await api(asked)).json();
  if (asked !== classPath()) return;   // another class was chosen meanwhile
  view = answer;
  $("#view").hidden = false;
  const flags = $("#flags");
  flags.replaceChildren(...view.flags.map((f) => el("p", f, "flag")));
  if (!view.flags.length) flags.append(el("p", "No strategy of this class puts its evidence at a fixed place.", "small"));
  $("#summary").textContent = `${view.k} strateg${view.k === 1 ? "y" : "ies"} among the ${view.images} images ${view.called === false ? "explained for" : "called"} “${view.class}”` +
    (view.gap_ratio !== null ? ` (eigengap ratio ${view.gap_ratio.toFixed(1)})` : "") + "." +
    (view.note ? ` Note: ${view.note}.` : "") +
    (view.in_mask !== null ? ` Share of the evidence inside the marked regions: ${pct(view.in_mask)}.` : "") +
    (view.shown < view.images ? ` The picture shows ${view.shown} of them.` : "");
  $("#class-mean").src = view.mean_map;
  drawStrategies();
  drawScatter();
  await showDetail();
}

// -- the scatter ----------------------------------------------------------------------------
const SIZE = 440, PAD = 16;
function drawScatter() {
  const svg = $("#scatter");
  svg.replaceChildren();
  const pts = view.points;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const lo = [Math.min(...xs), Math.min(...ys)], hi = [Math.max(...xs), Math.max(...ys)];
  const span = [hi[0] - lo[0] || 1, hi[1] - lo[1] || 1];
  const r = pts.length > 600 ? 3 : 5;
  const ns = "http://www.w3.org/2000/svg";
  for (const p of pts) {
    const cl = view.clusters[p.cluster];
    const c = document.createElementNS(ns, "circle");
    p.sx = PAD + (p.x - lo[0]) / span[0] * (SIZE - 2 * PAD);
    p.sy = PAD + (p.y - lo[1]) / span[1] * (SIZE - 2 * PAD);
    c.setAttribute("cx", p.sx.toFixed(1)); c.setAttribute("cy", p.sy.toFixed(1));
    c.setAttribute("r", r); c.setAttribute("fill", cl.colour);
    c.dataset.position = p.position; c.dataset.cluster = p.cluster;
    if (flagged(cl)) c.classList.add("flagged");
    const t = document.createElementNS(ns, "title");
    t.textContent = `${p.id} (strategy ${p.cluster + 1})`;
    c.append(t);
    svg.append(c);
  }
  highlight();
}

function highlight() {
  const svg = $("#scatter");
  for (const c of svg.querySelectorAll("circle")) {
    c.classList.toggle("sel", c.dataset.position === state.point);
    c.classList.toggle("faded", state.cluster !== "" && c.dataset.cluster !== state.cluster);
    if (c.dataset.position === state.point) svg.append(c);   // on top
  }
  for (const b of document.querySelectorAll("#strategies button")) b.classList.toggle("sel", b.dataset.cluster === state.cluster);
}

function nearest(evt) {
  const svg = $("#scatter");
  const pt = svg.createSVGPoint();
  pt.x = evt.clientX; pt.y = evt.clientY;
  const at = pt.matrixTransform(svg.getScreenCTM().inverse());
  let best = null, dist = 15 * 15;
  for (const p of view.points) {
    const d = (p.sx - at.x) ** 2 + (p.sy - at.y) ** 2;
    if (d <= dist) { best = p; dist = d; }
  }
  return best;
}

function drawStrategies() {
  const ul = $("#strategies");
  ul.replaceChildren();
  for (const cl of view.clusters) {
    const b = el("button");
    b.type = "button"; b.dataset.cluster = String(cl.index);
    const dot = el("span", null, "dot" + (flagged(cl) ? " flagged" : ""));
    dot.style.background = cl.colour;
    const text = el("span");
    text.append(el("strong", `Strategy ${cl.index + 1}`), `: ${cl.size} images (${pct(cl.share)}); evidence ${cl.fixed_location ? "at a fixed place" : "follows the content"}, ${cl.where}`);
    if (flagged(cl)) text.append(" ", el("span", "⚠ flagged", "warn"));
    b.append(dot, text);
    b.addEventListener("click", () => select("", String(cl.index)));
    const li = el("li");
    li.append(b);
    ul.append(li);
  }
}

function select(point, cluster) {
  state.point = point; state.cluster = cluster;
  writeHash();
  highlight();
  showDetail().catch(fail);
}

// -- the detail: one image, or one strategy --------------------------------------------------
let ticket = 0;   // the latest detail asked for: an older answer arriving late is dropped
async function showDetail() {
  const mine = ++ticket;
  const box = $("#detail");
  const current = () => mine === ticket;
  if (state.point !== "") await showPoint(box, Number(state.point), current);
  else if (state.cluster !== "") await showCluster(box, Number(state.cluster), current);
  else box.replaceChildren(el("p", "Click a dot to see that image with its map, or a strategy to see its most typical images.", "hint"));
  if (current()) done();
}

function figures(rows) {
  const t = el("table", null, "figures");
  for (const [k, v] of rows) {
    const tr = el("tr");
    const td = el("td");
    if (v instanceof Node) td.append(v); else td.textContent = v;
    tr.append(el("td", k), td);
    t.append(tr);
  }
  return t;
}

async function showPoint(box, pos, current) {
  const row = await (await api(`${base()}/images/${pos}`)).json();
  const r = await api(`${base()}/images/${pos}.png?overlay=${state.overlay === "1"}&size=320`);
  const marks = r.headers.get("X-Marks-Colour");
  const blob = await r.blob();
  if (!current()) return;
  if (pictureUrl) URL.revokeObjectURL(pictureUrl);
  pictureUrl = URL.createObjectURL(blob);
  const h = el("h2", row.id);
  const img = el("img", null, "picture");
  img.src = pictureUrl; img.alt = `${row.id} with its map`; img.id = "picture";
  img.dataset.overlay = state.overlay;
  const toggle = el("button", state.overlay === "1" ? "hide the map" : "show the map", "button");
  toggle.type = "button"; toggle.id = "overlay";
  toggle.addEventListener("click", () => { state.overlay = state.overlay === "1" ? "0" : "1"; writeHash(); showDetail().catch(fail); });
  const legend = el("p", (state.overlay === "1"
    ? `Colour: where the evidence for “${row.class}” sits (${row.method_title}, its positive part; bright = strong).`
    : "The image as stored.") + (marks ? ` ${marks[0].toUpperCase() + marks.slice(1)} outline: the expert's marks.` : ""), "legend");
  const cl = view.clusters[row.cluster];
  const strategy = el("button", `Strategy ${row.cluster + 1}`, "link");
  strategy.type = "button"; strategy.id = "to-strategy";
  strategy.addEventListener("click", () => select("", String(row.cluster)));
  const top = el("ul", null, "classes");
  for (const c of row.top) {
    const li = el("li");
    const line = el("div", null, "topline");
    const bar = el("span", null, "bar"); bar.style.width = `${Math.max(1, c.probability * 100)}%`; bar.style.display = "block";
    line.append(el("span", `${c.label}: ${(100 * c.probability).toFixed(1)}%`), bar);
    li.append(line); top.append(li);
  }
  const stratCell = el("span");
  stratCell.append(strategy, flagged(cl) ? el("span", " ⚠ flagged", "warn") : "");
  const side = el("div", null, "facts");
  side.append(figures([
    ["label", row.label ?? "not known"],
    ["the model says", `${row.predicted_name} (${(100 * row.top[0].probability).toFixed(1)}%)`],
    ["explained class", row.class],
    ["evidence inside the marks", row.in_mask !== null && row.in_mask !== undefined ? pct(row.in_mask) : (row.has_mask ? "no evidence" : "no marks for this image")],
    ["strategy", stratCell],
    ["position in the index", String(row.position)],
  ]), el("h3", "Top classes"), top);
  for (const f of row.cluster_flags) side.append(el("p", f, "flag"));
  const left = el("div", null, "pic");
  left.append(img, legend, toggle);
  const cols = el("div", null, "row");
  cols.append(left, side);
  box.replaceChildren(h, cols);
}

async function showCluster(box, k, current) {
  const cl = await (await api(`${classPath()}/clusters/${k}`)).json();
  if (!current()) return;
  const h = el("h2");
  const dot = el("span", null, "dot" + (flagged(cl) ? " flagged" : ""));
  dot.style.background = cl.colour;
  h.append(dot, ` Strategy ${k + 1}: ${cl.size} images (${pct(cl.share)}) ${cl.called === false ? "explained for" : "called"} “${cl.class}”`);
  const flags = cl.flags.map((f) => el("p", f, "flag"));
  const mean = el("img", null, "mean");
  mean.src = cl.mean_map; mean.alt = "mean evidence of the strategy"; mean.id = "strategy-mean";
  const fig = el("figure", null, "mean");
  fig.append(mean, el("figcaption", "Mean evidence"));
  const labels = Object.entries(cl.labels).map(([l, n]) => `${l}: ${n}`).join(", ");
  const rows = [
    ["evidence sits", cl.where],
    ["fixed place or following the content", `${cl.fixed_location ? "fixed place" : "follows the content"} (consistency ${cl.consistency.toFixed(2)})`],
    ["at the border", `${pct(cl.border)} of the evidence`],
  ];
  if (cl.in_mask !== null) rows.push(["inside the marks", pct(cl.in_mask)]);
  if (labels) rows.push(["labels", labels]);
  if (cl.accuracy !== null) rows.push(["accuracy", pct(cl.accuracy)]);
  rows.push(["mean confidence", pct(cl.mean_probability)]);
  const top = el("div", null, "row");
  top.append(fig, figures(rows));
  const grid = el("div", null, "grid");
  grid.id = "typical";
  for (const t of cl.typical) {
    const b = el("button");
    b.type = "button"; b.dataset.position = t.position; b.title = `${t.id}: open`;
    const img = el("img");
    img.src = `${base()}/images/${t.position}.png?overlay=true&size=112`; img.alt = t.id;
    b.append(img, el("span", t.id));
    b.addEventListener("click", () => select(String(t.position), ""));
    grid.append(b);
  }
  box.replaceChildren(h, ...flags, top, el("h3", `Most typical images (${cl.typical.length} of ${cl.members.length})`), grid);
}

// -- start ------------------------------------------------------------------------------------
function fail(e) { say(e.message); done(); }

async function start() {
  readHash();
  const audits = await (await api("/api/audits")).json();
  fetch("/api/models", { credentials: "same-origin" }).then((r) => r.ok ? r.json() : []).then((m) => { $("#explain-link").hidden = !m.length; }).catch(() => {});
  if (!audits.length) { say("No audit is served: start mindlens serve --audit STORE_OR_AUDIT_DIR"); done(); return; }
  const sel = $("#audit");
  for (const a of audits) { const o = el("option", `${a.name} (${a.method || "reading…"})`); o.value = a.name; sel.append(o); }
  $("#audit-wrap").hidden = audits.length < 2;
  if (!audits.some((a) => a.name === state.audit)) state.audit = audits[0].name;
  sel.value = state.audit;
  sel.addEventListener("change", () => { state.audit = sel.value; state.cls = ""; state.point = ""; state.cluster = ""; $("#view").hidden = true; writeHash(); loadAudit().catch(fail); });
  $("#scatter").addEventListener("click", (e) => { const p = view && nearest(e); if (p) select(String(p.position), ""); });
  window.addEventListener("hashchange", () => {
    const before = state.audit + "\n" + state.cls;
    readHash();
    if (state.audit + "\n" + state.cls !== before) loadAudit().catch(fail);
    else { highlight(); showDetail().catch(fail); }
  });
  document.body.dataset.loaded = "1";
  await loadAudit();
}

start().catch(fail);
