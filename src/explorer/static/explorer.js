// The explorer's page: plain DOM, no library, nothing fetched but this server's /api and /image.
// Text from the data (class names, tags, file names) only ever goes in through textContent.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const SIZE = 480; // the map's pixels
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"];

const state = {
  meta: null, map: null, lams: [], query: null, // query: {row} or {upload, url, name, seen}
  offset: 0, seq: 0, inFlight: false, pending: false, answer: null, view: null,
};

const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}
function svgEl(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
const colour = (c) => (c < PALETTE.length ? PALETTE[c] : `hsl(${(c * 47) % 360} 55% 50%)`);
const fmt = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(3));
// λ in decimals, three significant digits: 0.841, 0.0156, 64
const lamText = (x) => (x === 0 ? "0" : `${+x.toPrecision(3)}`);

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: `${url}: HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function showMessage(text) {
  $("message").textContent = text || "";
}

// -- λ: a log scale 0, 1/64 … 64, with the task's default and every student's λ on it --------

function lambdaScale(meta) {
  const lams = new Set([0, meta.default_lambda, ...meta.student_lambdas]);
  for (let k = 0; k <= 48; k++) lams.add(2 ** (k / 4 - 6));
  return [...lams].filter((x) => x <= meta.lambda_max).sort((a, b) => a - b);
}
const nearestIndex = (lams, x) =>
  lams.reduce((best, v, i) => (Math.abs(v - x) < Math.abs(lams[best] - x) ? i : best), 0);
const currentLambda = () => state.lams[+$("lam").value];
const currentAlpha = () => +$("alpha").value / 4;
const currentMethod = () => document.querySelector("input[name=method]:checked").value;

function setupControls(meta) {
  $("about").textContent = `task ${meta.task} · run ${meta.run} · ${meta.size} images ` +
    `(${meta.database === "test" ? "the test split, the paper's protocol" : "train + test"})`;
  for (const a of meta.conditions) {
    const label = el("label", {}, `${a} `);
    const sel = el("select", { id: `cond-${a}`, "data-attr": a });
    meta.attributes[a].forEach((name, i) => sel.append(el("option", { value: i }, name)));
    sel.addEventListener("change", ask);
    label.append(sel);
    $("conditions").append(label);
  }
  for (const [key, m] of Object.entries(meta.methods)) { // the registry's methods, in its order
    const label = el("label", { class: "method" });
    const input = el("input", { type: "radio", name: "method", value: key, id: `method-${key}` });
    if (key === meta.default_method) input.checked = true;
    input.addEventListener("change", onMethod);
    label.append(input, document.createTextNode(` ${m.label}`));
    $("methods").append(label);
  }
  state.lams = lambdaScale(meta);
  const lam = $("lam");
  lam.max = state.lams.length - 1;
  lam.value = nearestIndex(state.lams, meta.default_lambda);
  const marks = [meta.default_lambda, ...meta.student_lambdas];
  for (const x of marks) $("lam-marks").append(el("option", { value: nearestIndex(state.lams, x) }));
  $("lam-max").textContent = lamText(meta.lambda_max);
  const students = meta.student_lambdas.length
    ? `; students (D1) at λ = ${meta.student_lambdas.map(lamText).join(", ")}`
    : "; no student distilled (D1)";
  $("lam-default").textContent = `the task's λ = ${lamText(meta.default_lambda)} (marked)${students}`;
  lam.addEventListener("input", () => { showLambda(); ask(); });
  $("alpha").max = 4 * meta.alpha_max; // quarter steps, as E1's α sweep
  $("alpha").addEventListener("input", () => { showAlpha(); ask(); });
  showLambda();
  showAlpha();
  if (!meta.uploads) {
    $("upload").disabled = true;
    $("upload-msg").textContent = "this run has no backbone: it cannot embed a new picture";
  }
  $("upload").addEventListener("change", onUpload);
  $("prev").addEventListener("click", () => browse(Math.max(0, state.offset - 48)));
  $("next").addEventListener("click", () => browse(state.offset + 48));
  for (const [a, names] of Object.entries(meta.attributes)) {
    const sel = el("select", { id: `filter-${a}`, "data-attr": a });
    sel.append(el("option", { value: "" }, `any ${a}`));
    names.forEach((name, i) => sel.append(el("option", { value: i }, name)));
    sel.addEventListener("change", () => browse(0));
    $("filters").append(sel);
  }
}

function showLambda() {
  const x = currentLambda();
  const def = Math.abs(x - state.meta.default_lambda) < 1e-12 ? " (the task's)" : "";
  $("lam-value").textContent = `λ = ${lamText(x)}${def}`;
}
function showAlpha() {
  $("alpha-value").textContent = `α = ${currentAlpha()}`;
}

function onMethod() {
  const m = state.meta.methods[currentMethod()];
  $("alpha-box").hidden = m.knob !== "alpha";
  $("lambda-box").classList.toggle("unused", m.knob !== "lambda");
  const students = state.meta.student_lambdas;
  if (m.trained && students.length && !students.includes(currentLambda())) {
    // a student exists only at the λ D1 distilled it at: go to the nearest one
    const x = students.reduce((b, v) => (Math.abs(v - currentLambda()) < Math.abs(b - currentLambda()) ? v : b));
    $("lam").value = state.lams.indexOf(x);
    showLambda();
  }
  ask();
}

// -- the query: browse the database, or upload --------------------------------------------

async function browse(offset) {
  const params = new URLSearchParams({ offset });
  for (const sel of $("filters").querySelectorAll("select")) {
    if (sel.value !== "") params.set(sel.dataset.attr, sel.value);
  }
  let page;
  try {
    page = await getJSON(`/api/browse?${params}`);
  } catch (e) {
    showMessage(e.message);
    return;
  }
  state.offset = page.offset;
  const box = $("browser");
  box.replaceChildren();
  for (const item of page.rows) {
    const b = el("button", { type: "button", class: "thumb", "data-row": item.row,
      title: Object.values(item.labels).join(" · ") });
    b.append(el("img", { src: `/image/${item.row}`, alt: item.image, loading: "lazy" }));
    b.addEventListener("click", () => pickRow(item));
    box.append(b);
  }
  const last = Math.min(page.total, page.offset + page.rows.length);
  $("page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "none";
  $("prev").disabled = page.offset === 0;
  $("next").disabled = last >= page.total;
  markPicked();
}

function markPicked() {
  for (const b of $("browser").querySelectorAll(".thumb")) {
    b.classList.toggle("picked", state.query && +b.dataset.row === state.query.row);
  }
}

function pickRow(item) {
  state.query = { row: item.row };
  $("query-img").src = `/image/${item.row}`;
  $("query-labels").textContent = Object.entries(item.labels).map(([a, c]) => `${a}: ${c}`).join(" · ");
  showTags($("query-tags"), item.tags, []);
  $("query-seen").textContent = "";
  // a condition that differs from the query's own class, so that the search has somewhere to go
  for (const a of state.meta.conditions) {
    const sel = $(`cond-${a}`);
    const own = state.meta.attributes[a].indexOf(item.labels[a]);
    if (+sel.value === own) sel.value = (own + 1) % state.meta.attributes[a].length;
  }
  markPicked();
  ask();
}

async function onUpload(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  const msg = $("upload-msg");
  if (file.size > state.meta.max_upload_bytes) {
    msg.textContent = `${file.name} is larger than ${state.meta.max_upload_bytes >> 20} MiB: resize it`;
    return;
  }
  msg.textContent = `embedding ${file.name}…`;
  let up;
  try {
    // an image type, as the server asks (a type a cross-site form cannot send); it says if not
    up = await getJSON("/api/upload", { method: "POST", body: file, headers: {
      "Content-Type": file.type || "application/octet-stream",
      "X-Filename": encodeURIComponent(file.name) } });
  } catch (e) {
    msg.textContent = e.message; // the server said why; it keeps running
    msg.classList.add("error");
    return;
  }
  msg.classList.remove("error");
  msg.textContent = `${up.name}: the encoder sees ${Object.entries(up.seen_as).map(([a, c]) => `${a} ${c}`).join(", ")}`;
  if (state.query && state.query.url) URL.revokeObjectURL(state.query.url);
  state.query = { upload: up.token, url: URL.createObjectURL(file), name: up.name };
  $("query-img").src = state.query.url;
  $("query-labels").textContent = `${up.name} (uploaded; no labels, no tags)`;
  $("query-tags").replaceChildren();
  markPicked();
  ask();
}

// -- one interaction ---------------------------------------------------------------------

function request() {
  const conditions = {};
  for (const a of state.meta.conditions) conditions[a] = +$(`cond-${a}`).value;
  const body = { conditions, method: currentMethod(), lam: currentLambda(), alpha: currentAlpha() };
  if (state.query.row !== undefined) body.row = state.query.row;
  else body.upload = state.query.upload;
  return body;
}

// One request at a time; a change made meanwhile is sent when it returns (the latest wins).
async function ask() {
  if (!state.query) return;
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  document.body.dataset.busy = "1";
  const seq = ++state.seq;
  try {
    const answer = await getJSON("/api/search", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()) });
    if (seq === state.seq) { showMessage(""); render(answer); }
  } catch (e) {
    showMessage(e.message);
  } finally {
    state.inFlight = false;
    if (state.pending) { state.pending = false; ask(); } else document.body.dataset.busy = "0";
  }
}

function render(answer) {
  state.answer = answer;
  const seen = (o) => Object.entries(o).map(([a, c]) => `${a} ${c}`).join(", ");
  $("query-seen").textContent = `the heads see ${seen(answer.query_as)}`;
  const parts = [
    `precision@10 ${fmt(answer.precision)}`,
    `mean tag-Jaccard ${fmt(answer.mean_jaccard)}`,
    `ranked vector seen as ${seen(answer.answer_as)}`,
  ];
  if (answer.iterations !== null) {
    const sat = answer.satisfied_at >= 0 ? `condition met at step ${answer.satisfied_at}` : "condition never met";
    parts.push(`${answer.iterations} steps, answer at step ${answer.walk.length - 1}, ${sat}`);
  }
  $("summary").textContent = parts.join(" · ");
  const box = $("results");
  box.replaceChildren();
  for (const r of answer.results) {
    const tile = el("figure", { class: `tile ${r.hit ? "hit" : "miss"}`, "data-row": r.row });
    tile.append(el("img", { src: `/image/${r.row}`, alt: r.image }));
    const cap = el("figcaption");
    const head = `#${r.rank} ${r.hit ? "✓" : "✗"}` + (r.score === null ? "" : ` cos ${r.score.toFixed(2)}`) +
      (r.jaccard === null ? "" : ` TS ${r.jaccard.toFixed(2)}`);
    cap.append(el("div", { class: "rank" }, head));
    cap.append(el("div", {}, Object.values(r.labels).join(" · ")));
    if (r.is_query) cap.append(el("div", { class: "self" }, "(the query itself)"));
    const tags = el("div", { class: "tags" });
    showTags(tags, r.tags, r.shared);
    cap.append(tags);
    tile.append(cap);
    box.append(tile);
  }
  box.dataset.rows = answer.results.map((r) => r.row).join(",");
  drawMap();
}

function showTags(box, tags, shared) {
  box.replaceChildren();
  for (const t of tags) box.append(el(shared.includes(t) ? "mark" : "span", {}, t));
}

// -- the map -----------------------------------------------------------------------------

function bounds(points) {
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const pad = 0.06 * Math.max(x1 - x0, y1 - y0, 1e-9);
  return { x0: x0 - pad, y0: y0 - pad, span: Math.max(x1 - x0, y1 - y0, 1e-9) + 2 * pad };
}
const toPx = (b, [x, y]) => [((x - b.x0) / b.span) * SIZE, SIZE - ((y - b.y0) / b.span) * SIZE];

function drawMap() {
  const walk = state.answer ? state.answer.walk : [];
  const b = (state.view = bounds([...state.map.xy, ...walk]));
  const ctx = $("map-canvas").getContext("2d");
  ctx.clearRect(0, 0, SIZE, SIZE);
  ctx.globalAlpha = 0.45;
  state.map.xy.forEach((p, i) => {
    const [px, py] = toPx(b, p);
    ctx.fillStyle = colour(state.map.colour[i]);
    ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
  });
  ctx.globalAlpha = 1;
  const path = walk.map((p) => toPx(b, p));
  $("walk-path").setAttribute("points", path.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  const steps = $("walk-steps");
  steps.replaceChildren();
  path.slice(1, -1).forEach(([x, y], t) => {
    const c = svgEl("circle", { cx: x, cy: y, r: 2.2, class: "step" });
    c.dataset.tip = `step ${t + 1} of the search`;
    steps.append(c);
  });
  const dots = $("result-dots");
  dots.replaceChildren();
  if (state.answer) {
    for (const r of state.answer.results) {
      const [x, y] = toPx(b, state.map.xy[r.row]);
      const d = svgEl("rect", { x: x - 4, y: y - 4, width: 8, height: 8,
        class: `result ${r.hit ? "hit" : "miss"}` });
      d.dataset.row = r.row;
      d.dataset.tip = `#${r.rank}: ${Object.values(r.labels).join(" · ")}`;
      dots.append(d);
    }
  }
  const ends = $("ends");
  ends.replaceChildren();
  if (path.length) {
    const [x0, y0] = path[0];
    const start = svgEl("circle", { cx: x0, cy: y0, r: 7, id: "z0", class: "z0" });
    start.dataset.tip = "z₀: the query";
    if (state.query.row !== undefined) start.dataset.row = state.query.row;
    ends.append(start);
    if (path.length > 1) {
      const [x1, y1] = path[path.length - 1];
      const end = svgEl("circle", { cx: x1, cy: y1, r: 7, id: "zfinal", class: "zfinal" });
      end.dataset.tip = "the vector ranked (the search's answer)";
      ends.append(end);
    }
  }
}

function legend() {
  const attr = state.map.attribute;
  const box = $("legend");
  state.meta.attributes[attr].forEach((name, i) => {
    const item = el("span", { class: "key" });
    const sw = el("i");
    sw.style.background = colour(i);
    item.append(sw, document.createTextNode(name));
    box.append(item);
  });
}

// Hover: a marked point shows its tip; elsewhere the nearest database image within 6 px.
function onHover(ev) {
  const tip = $("tooltip");
  if (!state.view) return;
  const rect = $("map-svg").getBoundingClientRect();
  const mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
  let row = null, text = "";
  const mark = ev.target.dataset ? ev.target.dataset.tip : undefined;
  if (mark) {
    text = mark;
    row = ev.target.dataset.row !== undefined ? +ev.target.dataset.row : null;
  } else {
    let best = 36;
    state.map.xy.forEach((p, i) => {
      const [px, py] = toPx(state.view, p);
      const d = (px - mx) ** 2 + (py - my) ** 2;
      if (d < best) { best = d; row = i; }
    });
    if (row !== null) {
      const name = state.meta.attributes[state.map.attribute][state.map.colour[row]];
      text = `row ${row}: ${state.map.attribute} ${name}`;
    }
  }
  if (!text) { tip.hidden = true; return; }
  tip.hidden = false;
  // beside the cursor, on the side with room (the tip is 130 px wide)
  tip.style.left = `${mx > SIZE / 2 ? mx - 142 : mx + 12}px`;
  tip.style.top = `${Math.max(0, Math.min(my + 12, SIZE - 160))}px`;
  $("tooltip-text").textContent = text;
  const img = $("tooltip-img");
  const src = row !== null ? `/image/${row}` : mark && mark.startsWith("z₀") && state.query.url ? state.query.url : "";
  img.hidden = !src;
  if (src && img.getAttribute("src") !== src) img.src = src;
}

async function start() {
  try {
    state.meta = await getJSON("/api/meta");
    state.map = await getJSON("/api/map");
  } catch (e) {
    showMessage(e.message);
    return;
  }
  setupControls(state.meta);
  legend();
  drawMap();
  $("map-svg").addEventListener("mousemove", onHover);
  $("map-svg").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  await browse(0);
  const first = $("browser").querySelector(".thumb");
  if (first) first.click(); // something to look at straight away
  else document.body.dataset.busy = "0";
}

document.addEventListener("DOMContentLoaded", start);
