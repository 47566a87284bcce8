// The review page: plain JS, no build step, nothing fetched from anywhere but this server.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const DUPLICATE = "near-duplicate of";
let state = null;
let focused = 0;          // index into the visible cards
let visible = [];         // the cards after filter and sort

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3));
  if (v === null || v === undefined) return "-";
  return String(v);
}

function say(text, error = false) {
  const m = document.getElementById("message");
  m.textContent = text || "";
  m.className = error ? "error" : "";
}

async function api(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function reasonKey(r) { return r.startsWith(DUPLICATE) ? DUPLICATE : r; }

function decidedText(card) {
  if (card.status === "failed") return "unusable";
  if (card.decided_by === "override" && card.override) return `by ${card.override.by}, ${card.override.at}`;
  if (card.decided_by === "random weights") return "kept anyway: --random-weights keeps what the scores reject";
  return "by the scores";
}

// --- controls ---

function numericScores() {
  const names = new Set();
  for (const c of state.cards) for (const [k, v] of Object.entries(c.scores)) if (typeof v === "number") names.add(k);
  return ["combined", ...[...names].filter((n) => n !== "combined").sort()];
}

function setupControls() {
  const sort = document.getElementById("sort");
  const current = sort.value;
  sort.replaceChildren(el("option", { value: "key", text: "photo name" }), ...numericScores().map((n) => el("option", { value: n, text: n })));
  sort.value = current || "combined";
  const reasons = new Set();
  for (const c of state.cards) for (const r of [...c.reasons, ...c.per_photo_reasons]) reasons.add(reasonKey(r));
  const filter = document.getElementById("filter-reason");
  const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "", text: "any" }), ...[...reasons].sort().map((r) => el("option", { value: r, text: r })));
  filter.value = reasons.has(chosen) ? chosen : "";
}

function computeVisible() {
  const by = document.getElementById("sort").value || "combined";
  const desc = document.getElementById("descending").checked;
  const status = document.getElementById("filter-status").value;
  const reason = document.getElementById("filter-reason").value;
  visible = state.cards.filter((c) => {
    if (status === "override" && c.decided_by !== "override") return false;
    if (status === "disagree" && !(c.status === "kept" && !c.scores_kept)) return false;
    if (["kept", "rejected", "failed"].includes(status) && c.status !== status) return false;
    if (reason && !c.reasons.concat(c.per_photo_reasons).some((r) => reasonKey(r) === reason)) return false;
    return true;
  });
  visible.sort((a, b) => {
    if (by === "key") return desc ? b.key.localeCompare(a.key) : a.key.localeCompare(b.key);
    const x = a.scores[by], y = b.scores[by];
    const xm = typeof x !== "number", ym = typeof y !== "number";
    if (xm || ym) return xm - ym;   // unmeasured last, either way
    return desc ? y - x : x - y;
  });
  focused = Math.min(focused, Math.max(0, visible.length - 1));
}

// --- cards ---

function picture(url, label, cls) {
  if (!url) return el("figure", {}, el("div", { class: "missing", text: `no ${label}` }), el("figcaption", { text: label }));
  return el("figure", {}, el("img", { src: url, alt: label, class: cls, loading: "lazy" }), el("figcaption", { text: label }));
}

function extraTable(value, inherited = null) {
  // Any further data a stage adds to a record (e.g. per-face candidate scores): shown as it is,
  // the entry a "chosen"/"choice" key names marked.
  if (value === null || typeof value !== "object") return document.createTextNode(fmt(value));
  const table = el("table");
  const own = value.chosen ?? value.choice ?? null;
  const chosen = typeof own === "string" ? own : inherited;
  for (const [k, v] of Object.entries(value)) {
    const isChosen = chosen !== null && (k === chosen || (v && typeof v === "object" && v.name === chosen));
    table.append(el("tr", { class: isChosen ? "chosen" : "" }, el("td", { text: k + (isChosen ? " (chosen)" : "") }), el("td", {}, extraTable(v, chosen))));
  }
  return table;
}

function budgetText(b) {
  if (!b) return { text: "no caption file", cls: "" };
  if (b.fits === null) return { text: `${b.tokens} tokens: over 225, kohya cuts it`, cls: "over" };
  const note = b.fits === 75 ? "fits 75" : `needs max_token_length ${b.fits}`;
  return { text: `${b.tokens} / ${b.fits} tokens (${note})`, cls: `b${b.fits}` };
}

let countTimer = null;
function renderCard(card, index) {
  const sortedBy = document.getElementById("sort").value;
  const node = el("article", { class: `card ${card.status}${index === focused ? " focused" : ""}`, id: `card-${card.id}`, "data-key": card.key, "data-status": card.status });
  node.addEventListener("click", () => { if (focused !== index) { focused = index; markFocus(); } });
  node.append(el("h2", {},
    el("span", { class: `badge ${card.status}`, text: card.status === "failed" ? "unusable" : card.status }),
    el("span", { class: "name", title: card.key, text: card.key })),
    el("div", { class: "by decided", text: decidedText(card) }));
  node.append(el("div", { class: "pics" }, picture(card.thumbs.donor, "donor", "donor"), picture(card.thumbs.result, "result", "result")));
  if (card.thumbs.donor_face || card.thumbs.result_face) {
    node.append(el("div", { class: "faces" }, picture(card.thumbs.donor_face, "donor face", "donor_face"), picture(card.thumbs.result_face, "result face", "result_face")));
  }
  if (card.reasons.length) {
    node.append(el("div", { class: "reasons-head", text: card.status === "failed" ? "why it could not be used:" : "the scores reject it:" }),
      el("ul", { class: "reasons" }, ...card.reasons.map((r) => el("li", { text: r }))));
  } else {
    node.append(el("ul", { class: "reasons none" }, el("li", { text: "passed every check" })));
  }
  const scores = el("div", { class: "scores" });
  for (const [k, v] of Object.entries(card.scores).sort(([a], [b]) => a.localeCompare(b))) {
    scores.append(el("div", { class: k === sortedBy ? "sorted" : "" }, el("span", { class: "k", text: k }), el("span", { text: fmt(v) })));
  }
  node.append(scores);
  if (card.donor_face) node.append(el("div", { class: "by", text: `face: ${card.donor_face}` }));
  for (const [k, v] of Object.entries(card.extra)) {
    node.append(el("details", { class: "extra", open: true }, el("summary", { text: k }), extraTable(v)));
  }
  const actions = el("div", { class: "actions" },
    el("button", { class: "keep", text: "keep (k)", disabled: !card.has_result || card.status === "kept", onclick: () => setStatus(card, "kept") }),
    el("button", { class: "reject", text: "reject (r)", disabled: !card.has_result || card.status === "rejected", onclick: () => setStatus(card, "rejected") }),
    el("button", { class: "reset", text: "back to the scores (u)", disabled: card.decided_by !== "override", onclick: () => setStatus(card, null) }));
  node.append(actions);
  if (card.has_result) node.append(captionEditor(card));
  return node;
}

function captionEditor(card) {
  const b = budgetText(card.caption_budget);
  const count = el("span", { class: `count ${b.cls}`, text: b.text });
  const saved = el("span", { class: "saved", text: card.caption_override ? `edited by ${card.caption_override.by}, ${card.caption_override.at}` : "" });
  const area = el("textarea", { class: "caption-text", spellcheck: "false", placeholder: card.status === "kept" ? "" : "kept photos get a caption file; an edit here waits for it" });
  area.value = card.caption || "";
  area.addEventListener("input", () => {
    clearTimeout(countTimer);
    countTimer = setTimeout(async () => {
      try { const r = await api("/api/tokens", { text: area.value }); const t = budgetText(r); count.textContent = t.text; count.className = `count ${t.cls}`; }
      catch (e) { say(e.message, true); }
    }, 250);
  });
  const save = async () => {
    if (area.value.trim() === (card.caption || "").trim()) return;
    try {
      const r = await api("/api/caption", { key: card.key, caption: area.value });
      replaceCard(r);
      say(r.warning || `caption of ${card.key} saved`);
    } catch (e) { say(e.message, true); }
  };
  area.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); save(); }
    if (ev.key === "Escape") area.blur();
  });
  return el("div", { class: "caption" }, area,
    el("div", {}, count, el("button", { class: "save-caption", text: "save caption (Ctrl+Enter)", onclick: save }), saved));
}

function render() {
  computeVisible();
  const box = document.getElementById("cards");
  box.replaceChildren(...visible.map((c, i) => renderCard(c, i)));
  document.getElementById("shown").textContent = `${visible.length} of ${state.cards.length} shown`;
  document.getElementById("story").textContent = state.tally.story + (state.image_folder ? ` — training folder: ${state.image_folder}` : "");
}

function markFocus(scroll = false) {
  document.querySelectorAll(".card.focused").forEach((n) => n.classList.remove("focused"));
  const card = visible[focused];
  if (!card) return;
  const node = document.getElementById(`card-${card.id}`);
  node.classList.add("focused");
  if (scroll) node.scrollIntoView({ block: "nearest" });
}

function replaceCard(answer) {
  const i = state.cards.findIndex((c) => c.key === answer.card.key);
  state.cards[i] = answer.card;
  state.tally = answer.tally;
  state.image_folder = answer.image_folder;
  const key = visible[focused] && visible[focused].key;
  render();
  const j = visible.findIndex((c) => c.key === key);
  if (j >= 0) { focused = j; markFocus(); }
}

async function setStatus(card, status) {
  try {
    const r = await api("/api/status", { key: card.key, status });
    replaceCard(r);
    say(r.warning || `${card.key}: ${r.card.status}`);
  } catch (e) { say(e.message, true); }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("textarea, input, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (document.getElementById("cards-view").hidden) return;
  const card = visible[focused];
  if (["ArrowRight", "ArrowDown"].includes(ev.key)) { focused = Math.min(focused + 1, visible.length - 1); markFocus(true); ev.preventDefault(); }
  else if (["ArrowLeft", "ArrowUp"].includes(ev.key)) { focused = Math.max(focused - 1, 0); markFocus(true); ev.preventDefault(); }
  else if (!card) return;
  else if (ev.key === "k" && card.has_result) setStatus(card, "kept");
  else if (ev.key === "r" && card.has_result) setStatus(card, "rejected");
  else if (ev.key === "u" && card.decided_by === "override") setStatus(card, null);
  else if (ev.key === "e") { const t = document.querySelector(`#card-${card.id} textarea`); if (t) { t.focus(); ev.preventDefault(); } }
});

// --- samples ---

function plot(epochs, best, threshold) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 680, H = 250, L = 48, R = 60, T = 20, B = 44;
  const s = (tag, attrs, text) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); if (text !== undefined) n.textContent = text; return n; };
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "identity-plot", role: "img", "aria-label": "identity similarity per epoch" });
  const vals = epochs.map((e) => e.mean_similarity).filter((v) => typeof v === "number");
  const lo = Math.min(0, ...vals, threshold ?? 0), hi = Math.max(1, ...vals);
  const x = (i) => L + (epochs.length > 1 ? (i * (W - L - R)) / (epochs.length - 1) : (W - L - R) / 2);
  const y = (v) => T + ((hi - v) * (H - T - B)) / (hi - lo || 1);
  svg.append(s("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#777" }), s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#777" }));
  for (const v of [lo, (lo + hi) / 2, hi]) svg.append(s("text", { x: 4, y: y(v) + 4 }, v.toFixed(2)));
  if (typeof threshold === "number") {
    svg.append(s("line", { x1: L, y1: y(threshold), x2: W - R, y2: y(threshold), stroke: "#d29922", "stroke-dasharray": "4 3" }));
    svg.append(s("text", { x: L + 6, y: y(threshold) - 4 }, `threshold ${threshold}`));
  }
  const pts = epochs.map((e, i) => [i, e.mean_similarity]).filter(([, v]) => typeof v === "number");
  if (pts.length > 1) svg.append(s("polyline", { points: pts.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), fill: "none", stroke: "#58a6ff", "stroke-width": 2 }));
  epochs.forEach((e, i) => {
    const isBest = e.label === best;
    svg.append(s("text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, e.label));
    if (typeof e.mean_similarity === "number") {
      svg.append(s("circle", { cx: x(i), cy: y(e.mean_similarity), r: isBest ? 7 : 4, fill: isBest ? "#3fb950" : "#58a6ff", class: isBest ? "best" : "" }));
      if (isBest) svg.append(s("text", { x: x(i), y: y(e.mean_similarity) - 12, "text-anchor": "middle", class: "best-label" }, `best ${fmt(e.mean_similarity)}`));
    }
  });
  svg.append(s("text", { x: L, y: H - 6 }, "mean identity similarity of the samples to the source, per epoch"));
  return svg;
}

function renderSamples() {
  const box = document.getElementById("samples");
  const sm = state.samples;
  if (!sm) { box.replaceChildren(el("p", { text: "No samples yet: run `launch.py sample OUT` (or `run`) after training, then reload." })); return; }
  const parts = [el("p", { text: sm.verdict || (sm.best_epoch ? `best epoch: ${sm.best_epoch}` : "no best epoch (the samples were not scored)") }), plot(sm.epochs, sm.best_epoch, sm.threshold)];
  // The sample stage's three curves (identity, donor leakage, adherence) and the rule they decide by.
  if (sm.epoch_plot) parts.push(el("figure", { id: "epoch-plot" }, el("img", { src: sm.epoch_plot, alt: "identity, donor leakage and prompt adherence per epoch" }), el("figcaption", { text: sm.rule ? `best epoch rule: ${sm.rule}` : "" })));
  for (const e of sm.epochs) {
    const v = e.verdict || {};
    const flags = [v.leaking ? "leaks the donor" : "", v.overfit ? "overfit" : ""].filter(Boolean).join(", ");
    const extra = (typeof e.share_closer_to_donor === "number" ? ` · closer to donor ${Math.round(e.share_closer_to_donor * 100)}%` : "")
      + (typeof e.mean_adherence === "number" ? ` · adherence ${fmt(e.mean_adherence)}` : "")
      + (typeof e.validation_loss === "number" ? ` · val. loss ${fmt(e.validation_loss)}` : "") + (flags ? ` — ${flags}` : "");
    const head = `${e.label}${e.kind === "control" ? " (base model, control)" : ""}${e.label === sm.best_epoch ? " — best" : ""}: mean similarity ${fmt(e.mean_similarity)}${extra}`;
    parts.push(el("div", { class: `epoch${e.label === sm.best_epoch ? " best" : ""}`, "data-epoch": e.label }, el("h3", { text: head }),
      el("div", { class: "row" }, ...e.images.map((im) => el("figure", {}, el("img", { src: im.url, alt: im.prompt, loading: "lazy" }),
        el("figcaption", { text: `seed ${im.seed} · ${im.face_found === false ? "no face" : "sim " + fmt(im.similarity)}` }))))));
  }
  if (sm.grid) parts.push(el("details", { class: "full" }, el("summary", { text: "the whole grid (samples/grid.png)" }), el("img", { src: sm.grid, alt: "sample grid" })));
  box.replaceChildren(...parts);
}

function showTab(name) {
  document.querySelectorAll("nav .tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.getElementById("cards-view").hidden = name !== "cards";
  document.getElementById("samples-view").hidden = name !== "samples";
  if (name === "samples") renderSamples();
}

async function load() {
  const res = await fetch("/api/state");
  state = await res.json();
  if (!res.ok) { say(state.error || `HTTP ${res.status}`, true); return; }
  document.getElementById("run").textContent = state.run;
  document.getElementById("tab-samples").textContent = state.samples ? "Samples" : "Samples (none yet)";
  setupControls();
  render();
  document.body.dataset.loaded = "1";
}

for (const id of ["sort", "descending", "filter-status", "filter-reason"]) document.getElementById(id).addEventListener("change", render);
document.querySelectorAll("nav .tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
load().catch((e) => say(e.message, true));
