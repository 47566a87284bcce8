// The review page: plain JS, no build step, nothing fetched from anywhere but this server.
// An edit redraws only its own card and the summary; text typed and not saved yet (a draft)
// survives every redraw and a reload, and the page warns before it is left with drafts.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const DUPLICATE = "near-duplicate of";
const NATURAL = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
let state = null;
let byKey = new Map();    // key -> card
let focused = 0;          // index into the visible cards (all pages)
let visible = [];         // the cards after filter and sort
let page = 0;
const selected = new Set();
let drafts = new Map();   // key -> caption text typed and not saved
let seen = new Set();     // keys looked at in this browser: counted as reviewed

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

const canKeep = (c) => c.has_result && c.status !== "kept";
const canReject = (c) => c.has_result && c.status !== "rejected";
const canReset = (c) => c.decided_by === "override";
const reviewed = (c) => c.decided_by === "override" || seen.has(c.key);

// --- drafts and what this browser remembers (sessionStorage: this tab, across reloads) ---

function storeKey(what) { return `review-${what}:${state.run}`; }

function loadMemory() {
  try { drafts = new Map(Object.entries(JSON.parse(sessionStorage.getItem(storeKey("drafts")) || "{}"))); } catch { drafts = new Map(); }
  try { seen = new Set(JSON.parse(localStorage.getItem(storeKey("seen")) || "[]")); } catch { seen = new Set(); }
}

function saveDrafts() { sessionStorage.setItem(storeKey("drafts"), JSON.stringify(Object.fromEntries(drafts))); }

function setDraft(card, text) {
  if (text.trim() === (card.caption || "").trim()) drafts.delete(card.key); else drafts.set(card.key, text);
  saveDrafts();
}

function markSeen(card) {
  if (!card || seen.has(card.key)) return;
  seen.add(card.key);
  localStorage.setItem(storeKey("seen"), JSON.stringify([...seen]));
  renderSummary();
}

window.addEventListener("beforeunload", (ev) => {
  if (drafts.size) { ev.preventDefault(); ev.returnValue = ""; }
});

// --- controls, kept in the URL so a reload keeps them ---

function numericScores() {
  const names = new Set();
  for (const c of state.cards) for (const [k, v] of Object.entries(c.scores)) if (typeof v === "number") names.add(k);
  return ["combined", ...[...names].filter((n) => n !== "combined").sort()];
}

const CONTROLS = { sort: "sort", "filter-status": "status", "filter-reason": "reason", "page-size": "size" };

function setupControls() {
  const params = new URLSearchParams(location.search);
  const sort = document.getElementById("sort");
  sort.replaceChildren(el("option", { value: "key", text: "photo name" }), ...numericScores().map((n) => el("option", { value: n, text: n })));
  const reasons = new Set();
  for (const c of state.cards) for (const r of [...c.reasons, ...c.per_photo_reasons]) reasons.add(reasonKey(r));
  const filter = document.getElementById("filter-reason");
  filter.replaceChildren(el("option", { value: "", text: "any" }), ...[...reasons].sort().map((r) => el("option", { value: r, text: r })));
  sort.value = "combined";
  for (const [id, name] of Object.entries(CONTROLS)) {
    const node = document.getElementById(id);
    if (params.has(name) && [...node.options].some((o) => o.value === params.get(name))) node.value = params.get(name);
  }
  if (params.has("desc")) document.getElementById("descending").checked = params.get("desc") !== "0";
  page = Math.max(0, parseInt(params.get("page") || "1", 10) - 1) || 0;
}

function saveControls() {
  const params = new URLSearchParams();
  for (const [id, name] of Object.entries(CONTROLS)) { const v = document.getElementById(id).value; if (v) params.set(name, v); }
  params.set("desc", document.getElementById("descending").checked ? "1" : "0");
  if (page) params.set("page", String(page + 1));
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function pageSize() { return parseInt(document.getElementById("page-size").value, 10) || Infinity; }
function pageCount() { return Math.max(1, Math.ceil(visible.length / pageSize())); }
function pageOf(index) { return pageSize() === Infinity ? 0 : Math.floor(index / pageSize()); }

function matches(c, status, reason) {
  if (status === "override" && c.decided_by !== "override") return false;
  if (status === "disagree" && !(c.status === "kept" && !c.scores_kept)) return false;
  if (status === "unreviewed" && (reviewed(c) || !c.has_result)) return false;
  if (status === "warned" && !c.warnings.length) return false;
  if (["kept", "rejected", "failed"].includes(status) && c.status !== status) return false;
  if (reason && !c.reasons.concat(c.per_photo_reasons).some((r) => reasonKey(r) === reason)) return false;
  return true;
}

function computeVisible() {
  const by = document.getElementById("sort").value || "combined";
  const desc = document.getElementById("descending").checked;
  const status = document.getElementById("filter-status").value;
  const reason = document.getElementById("filter-reason").value;
  visible = state.cards.filter((c) => matches(c, status, reason));
  visible.sort((a, b) => {
    if (by === "key") return desc ? NATURAL.compare(b.key, a.key) : NATURAL.compare(a.key, b.key);
    const x = a.scores[by], y = b.scores[by];
    const xm = typeof x !== "number", ym = typeof y !== "number";
    if (xm || ym) return xm - ym || NATURAL.compare(a.key, b.key);   // unmeasured last, either way
    return (desc ? y - x : x - y) || NATURAL.compare(a.key, b.key);
  });
  focused = Math.min(focused, Math.max(0, visible.length - 1));
  page = Math.min(page, pageCount() - 1);
}

// --- cards ---

function picture(url, label, cls) {
  if (!url) return el("figure", {}, el("div", { class: "missing", text: `no ${label}` }), el("figcaption", { text: label }));
  return el("figure", {}, el("img", { src: url, alt: label, class: cls, loading: "lazy", decoding: "async", width: cls.endsWith("face") ? 130 : 200, height: cls.endsWith("face") ? 130 : 200 }), el("figcaption", { text: label }));
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

function filterByReason(reason) {
  document.getElementById("filter-reason").value = reasonKey(reason);
  page = 0; render(); saveControls();
}

let countTimer = null;
function renderCard(card) {
  const index = visible.indexOf(card);
  const sortedBy = document.getElementById("sort").value;
  const node = el("article", { class: `card ${card.status}${index === focused ? " focused" : ""}${selected.has(card.key) ? " selected" : ""}`,
    id: `card-${card.id}`, "data-key": card.key, "data-status": card.status, tabindex: "0", "aria-label": `${card.key}: ${card.status}` });
  node.addEventListener("focus", () => { const i = visible.indexOf(byKey.get(card.key)); if (i >= 0 && i !== focused) { focused = i; markFocus(); } });
  node.addEventListener("click", () => { const i = visible.indexOf(byKey.get(card.key)); if (i >= 0 && focused !== i) { focused = i; markFocus(); } });
  const pick = el("input", { type: "checkbox", class: "select", "aria-label": `select ${card.key}`, checked: selected.has(card.key) });
  pick.addEventListener("change", () => toggleSelect(card.key, pick.checked));
  node.append(el("h2", {}, pick,
    el("span", { class: `badge ${card.status}`, text: card.status === "failed" ? "unusable" : card.status }),
    el("span", { class: "name", title: card.key, text: card.key })),
    el("div", { class: "by decided", text: decidedText(card) }));
  if (card.warnings.length) node.append(el("ul", { class: "warnings" }, ...card.warnings.map((w) => el("li", { text: w }))));
  const pics = el("div", { class: "pics" }, picture(card.thumbs.donor, "donor", "donor"), picture(card.thumbs.result, "result", "result"));
  if (card.thumbs.result_full || card.thumbs.donor_full) pics.addEventListener("dblclick", () => openViewer(card));
  node.append(pics);
  if (card.thumbs.donor_face || card.thumbs.result_face) {
    node.append(el("div", { class: "faces" }, picture(card.thumbs.donor_face, "donor face", "donor_face"), picture(card.thumbs.result_face, "result face", "result_face")));
  }
  if (card.reasons.length) {
    node.append(el("div", { class: "reasons-head", text: card.status === "failed" ? "why it could not be used:" : "the scores reject it:" }),
      el("ul", { class: "reasons" }, ...card.reasons.map((r) => el("li", {}, el("button", { class: "reason", title: "show every result with this reason", text: r, onclick: () => filterByReason(r) })))));
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
  node.append(el("div", { class: "actions" },
    el("button", { class: "keep", text: "keep (k)", disabled: !canKeep(card), onclick: () => setStatus([card.key], "kept") }),
    el("button", { class: "reject", text: "reject (r)", disabled: !canReject(card), onclick: () => setStatus([card.key], "rejected") }),
    el("button", { class: "reset", text: "back to the scores (u)", disabled: !canReset(card), onclick: () => setStatus([card.key], null) }),
    el("button", { class: "zoom", text: "full size (z)", disabled: !(card.thumbs.result_full || card.thumbs.donor_full), onclick: () => openViewer(card) })));
  if (card.has_result) node.append(captionEditor(card));
  return node;
}

function captionEditor(card) {
  const b = budgetText(card.caption_budget);
  const count = el("span", { class: `count ${b.cls}`, text: b.text });
  const saved = el("span", { class: "saved", text: card.caption_override ? `edited by ${card.caption_override.by}, ${card.caption_override.at}` : "" });
  const area = el("textarea", { class: "caption-text", spellcheck: "false", "aria-label": `caption of ${card.key}`,
    placeholder: card.status === "kept" ? "" : "kept photos get a caption file; an edit here waits for it" });
  const draft = drafts.get(card.key);
  area.value = draft ?? card.caption ?? "";
  const unsaved = el("span", { class: "unsaved", text: draft !== undefined ? "unsaved" : "" });
  const recount = () => {
    clearTimeout(countTimer);
    countTimer = setTimeout(async () => {
      try { const r = await api("/api/tokens", { text: area.value }); const t = budgetText(r); count.textContent = t.text; count.className = `count ${t.cls}`; }
      catch (e) { say(e.message, true); }
    }, 250);
  };
  area.addEventListener("input", () => {
    setDraft(card, area.value);
    unsaved.textContent = drafts.has(card.key) ? "unsaved" : "";
    recount();
  });
  const save = async () => {
    if (!drafts.has(card.key)) return;
    try {
      const r = await api("/api/caption", { key: card.key, caption: area.value });
      drafts.delete(card.key); saveDrafts();
      applyAnswer(r);
      say(r.warning || `caption of ${card.key} saved`);
    } catch (e) { say(`${card.key}: ${e.message} (your text is kept)`, true); }
  };
  area.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); save(); }
    else if (ev.key === "Enter") { ev.preventDefault(); say("a caption is one line: Ctrl+Enter saves it"); }
    if (ev.key === "Escape") { area.blur(); document.getElementById(`card-${card.id}`)?.focus(); }
  });
  const controls = [count, el("button", { class: "save-caption", text: "save caption (Ctrl+Enter)", onclick: save }), unsaved, saved];
  if (card.caption_override) {
    const revert = el("button", { class: "revert-caption", text: "revert caption", title: card.captioner_caption ? `back to the captioner's: ${card.captioner_caption}` : "back to the captioner's caption",
      onclick: async () => {
        try { const r = await api("/api/caption", { key: card.key, caption: null }); drafts.delete(card.key); saveDrafts(); applyAnswer(r); say(`caption of ${card.key}: back to the captioner's`); }
        catch (e) { say(e.message, true); }
      } });
    controls.splice(2, 0, revert);
  }
  return el("div", { class: "caption" }, area, el("div", {}, ...controls));
}

function renderSummary() {
  document.getElementById("story").textContent = state.tally.story + (state.image_folder ? ` — training folder: ${state.image_folder}` : "");
  const withResult = state.cards.filter((c) => c.has_result);
  const done = withResult.filter(reviewed).length;
  const people = withResult.filter((c) => c.decided_by === "override").length;
  document.getElementById("progress").textContent = `Reviewed ${done} of ${withResult.length} (${people} decided by a person)`;
  const banner = document.getElementById("banner");
  banner.textContent = state.toml_warning || "";
  banner.hidden = !state.toml_warning;
}

function render() {
  computeVisible();
  const size = pageSize();
  const start = size === Infinity ? 0 : page * size;
  const shownCards = visible.slice(start, start + size);
  document.getElementById("cards").replaceChildren(...shownCards.map(renderCard));
  document.getElementById("shown").textContent = `${visible.length} of ${state.cards.length} shown`;
  document.getElementById("page-info").textContent = `page ${page + 1} of ${pageCount()}`;
  document.getElementById("page-prev").disabled = page === 0;
  document.getElementById("page-next").disabled = page >= pageCount() - 1;
  document.getElementById("select-shown").textContent = `select all ${visible.length} shown`;
  renderSummary();
  renderSelection();
}

function cardNode(card) { return card && document.getElementById(`card-${card.id}`); }

function markFocus(scroll = false) {
  document.querySelectorAll(".card.focused").forEach((n) => n.classList.remove("focused"));
  const card = visible[focused];
  if (!card) return;
  if (pageOf(focused) !== page) { page = pageOf(focused); render(); saveControls(); }
  const node = cardNode(card);
  node.classList.add("focused");
  if (scroll) { node.focus({ preventScroll: true }); node.scrollIntoView({ block: "nearest" }); }
  markSeen(card);
}

function applyAnswer(answer) {
  // Only the changed cards and the summary are drawn again; their place in the order stays
  // until the sort or a filter changes, so the focus does not jump.
  state.tally = answer.tally;
  state.image_folder = answer.image_folder;
  state.toml_warning = answer.warning;
  for (const card of answer.cards) {
    const old = byKey.get(card.key);
    state.cards[state.cards.indexOf(old)] = card;
    const v = visible.indexOf(old);
    if (v >= 0) visible[v] = card;
    byKey.set(card.key, card);
    const node = cardNode(old);
    if (node) {
      const hadFocus = node.contains(document.activeElement);
      const inText = document.activeElement && document.activeElement.tagName === "TEXTAREA" && node.contains(document.activeElement);
      const fresh = renderCard(card);
      node.replaceWith(fresh);
      if (inText) { const t = fresh.querySelector("textarea"); t.focus(); t.setSelectionRange(t.value.length, t.value.length); }
      else if (hadFocus) fresh.focus({ preventScroll: true });
    }
  }
  renderSummary();
}

async function setStatus(keys, status) {
  try {
    const r = await api("/api/status", keys.length === 1 ? { key: keys[0], status } : { keys, status });
    applyAnswer(r);
    say(r.warning || (keys.length === 1 ? `${keys[0]}: ${r.card.status}` : `${keys.length} photos: ${status || "back to the scores"}`));
  } catch (e) { say(e.message, true); }
}

// --- selection and bulk actions ---

function toggleSelect(key, on) {
  if (on) selected.add(key); else selected.delete(key);
  const node = cardNode(byKey.get(key));
  if (node) { node.classList.toggle("selected", on); node.querySelector("input.select").checked = on; }
  renderSelection();
}

function renderSelection() {
  const cards = [...selected].map((k) => byKey.get(k)).filter(Boolean);
  document.getElementById("selected").textContent = `${selected.size} selected`;
  document.getElementById("bulk-keep").disabled = !cards.some(canKeep);
  document.getElementById("bulk-reject").disabled = !cards.some(canReject);
  document.getElementById("bulk-reset").disabled = !cards.some(canReset);
}

function bulk(status, can) {
  const keys = [...selected].filter((k) => can(byKey.get(k)));
  if (keys.length) setStatus(keys, status);
}

document.getElementById("select-shown").addEventListener("click", () => { for (const c of visible) if (c.has_result) toggleSelect(c.key, true); });
document.getElementById("select-none").addEventListener("click", () => { for (const k of [...selected]) toggleSelect(k, false); });
document.getElementById("bulk-keep").addEventListener("click", () => bulk("kept", canKeep));
document.getElementById("bulk-reject").addEventListener("click", () => bulk("rejected", canReject));
document.getElementById("bulk-reset").addEventListener("click", () => bulk(null, canReset));
document.getElementById("page-prev").addEventListener("click", () => goPage(page - 1));
document.getElementById("page-next").addEventListener("click", () => goPage(page + 1));

function goPage(p) {
  p = Math.max(0, Math.min(p, pageCount() - 1));
  if (p === page) return;
  page = p;
  focused = Math.min(page * pageSize(), visible.length - 1);
  render(); saveControls(); markFocus(true);
  window.scrollTo(0, 0);
}

// --- the full-size view: zoom, pan, donor/result compare ---

const viewer = { card: null, zoom: 1, x: 0, y: 0, donor: false, drag: null };

function openViewer(card) {
  if (!card || !(card.thumbs.result_full || card.thumbs.donor_full)) return;
  viewer.card = card;
  document.getElementById("viewer-title").textContent = card.key;
  document.getElementById("viewer-result").src = card.thumbs.result_full || "";
  document.getElementById("viewer-donor").src = card.thumbs.donor_full || "";
  viewer.donor = !card.thumbs.result_full;
  viewer.zoom = 1; viewer.x = 0; viewer.y = 0;
  document.getElementById("viewer").hidden = false;
  drawViewer();
}

function closeViewer() {
  document.getElementById("viewer").hidden = true;
  viewer.card = null;
  cardNode(visible[focused])?.focus({ preventScroll: true });
}

function drawViewer() {
  const slide = document.getElementById("viewer-slide").checked;
  const split = document.getElementById("viewer-slider").value;
  const donor = document.getElementById("viewer-donor");
  document.getElementById("viewer-slider").hidden = !slide;
  document.getElementById("viewer-flip").textContent = slide ? "slider: donor left, result right" : `showing: ${viewer.donor ? "donor" : "result"} (space flips)`;
  donor.hidden = !slide && !viewer.donor;
  donor.style.clipPath = slide ? `inset(0 ${100 - split}% 0 0)` : "none";
  document.getElementById("viewer-layer").style.transform = `translate(${viewer.x}px, ${viewer.y}px) scale(${viewer.zoom})`;
  document.getElementById("zoom-level").textContent = viewer.zoom === 1 ? "fit" : `${Math.round(viewer.zoom * 100)}% of fit`;
}

function zoomBy(f) { viewer.zoom = Math.min(16, Math.max(1, viewer.zoom * f)); if (viewer.zoom === 1) { viewer.x = 0; viewer.y = 0; } drawViewer(); }

document.getElementById("viewer-close").addEventListener("click", closeViewer);
document.getElementById("viewer-flip").addEventListener("click", () => { viewer.donor = !viewer.donor; drawViewer(); });
document.getElementById("viewer-slide").addEventListener("change", drawViewer);
document.getElementById("viewer-slider").addEventListener("input", drawViewer);
document.getElementById("zoom-in").addEventListener("click", () => zoomBy(1.5));
document.getElementById("zoom-out").addEventListener("click", () => zoomBy(1 / 1.5));
document.getElementById("zoom-fit").addEventListener("click", () => zoomBy(0));
const stage = document.getElementById("viewer-stage");
stage.addEventListener("wheel", (ev) => { ev.preventDefault(); zoomBy(ev.deltaY < 0 ? 1.25 : 0.8); }, { passive: false });
stage.addEventListener("pointerdown", (ev) => { viewer.drag = [ev.clientX - viewer.x, ev.clientY - viewer.y]; stage.setPointerCapture(ev.pointerId); });
stage.addEventListener("pointermove", (ev) => { if (viewer.drag && viewer.zoom > 1) { viewer.x = ev.clientX - viewer.drag[0]; viewer.y = ev.clientY - viewer.drag[1]; drawViewer(); } });
stage.addEventListener("pointerup", () => { viewer.drag = null; });

function viewerKey(ev) {
  if (ev.key === "Escape") closeViewer();
  else if (ev.key === " " || ev.key === "c") viewer.donor = !viewer.donor;
  else if (ev.key === "s") { const s = document.getElementById("viewer-slide"); s.checked = !s.checked; }
  else if (ev.key === "+" || ev.key === "=") zoomBy(1.5);
  else if (ev.key === "-") zoomBy(1 / 1.5);
  else if (ev.key === "0") zoomBy(0);
  else return;
  ev.preventDefault();
  if (viewer.card) drawViewer();
}

// --- keys: they move in the grid's real layout ---

function rowMove(step) {
  // The card in the next (previous) row whose middle is nearest this one's, as the grid lays them out.
  const here = cardNode(visible[focused]);
  if (!here) return focused;
  const box = here.getBoundingClientRect();
  const mid = box.left + box.width / 2;
  let best = null;
  for (const node of document.querySelectorAll("#cards article.card")) {
    const b = node.getBoundingClientRect();
    if (step > 0 ? b.top <= box.top + 1 : b.top >= box.top - 1) continue;
    const rowGap = Math.abs(b.top - box.top), dx = Math.abs(b.left + b.width / 2 - mid);
    if (!best || rowGap < best[0] - 1 || (Math.abs(rowGap - best[0]) <= 1 && dx < best[1])) best = [rowGap, dx, node];
  }
  if (!best) return focused;  // no row there on this page: PageDown/PageUp change pages
  return visible.findIndex((c) => c.key === best[2].dataset.key);
}

document.addEventListener("keydown", (ev) => {
  if (!document.getElementById("viewer").hidden) { viewerKey(ev); return; }
  if (ev.target.closest("textarea, input, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (document.getElementById("cards-view").hidden) return;
  const card = visible[focused];
  const move = (i) => { focused = Math.max(0, Math.min(i, visible.length - 1)); markFocus(true); ev.preventDefault(); };
  if (ev.key === "ArrowRight") move(focused + 1);
  else if (ev.key === "ArrowLeft") move(focused - 1);
  else if (ev.key === "ArrowDown") move(rowMove(1));
  else if (ev.key === "ArrowUp") move(rowMove(-1));
  else if (ev.key === "Home") move(0);
  else if (ev.key === "End") move(visible.length - 1);
  else if (ev.key === "PageDown") { ev.preventDefault(); goPage(page + 1); }
  else if (ev.key === "PageUp") { ev.preventDefault(); goPage(page - 1); }
  else if (!card) return;
  // A key does what its button does, and nothing where the button is disabled.
  else if (ev.key === "k") { if (canKeep(card)) setStatus([card.key], "kept"); else say(`${card.key} is already kept (or has no result)`); }
  else if (ev.key === "r") { if (canReject(card)) setStatus([card.key], "rejected"); else say(`${card.key} is already rejected (or has no result)`); }
  else if (ev.key === "u") { if (canReset(card)) setStatus([card.key], null); }
  else if (ev.key === "x") toggleSelect(card.key, !selected.has(card.key));
  else if (ev.key === "z" || ev.key === "Enter") { if (ev.target.tagName !== "BUTTON") { openViewer(card); ev.preventDefault(); } }
  else if (ev.key === "e") { const t = cardNode(card)?.querySelector("textarea"); if (t) { t.focus(); ev.preventDefault(); } }
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
  byKey = new Map(state.cards.map((c) => [c.key, c]));
  loadMemory();
  document.getElementById("run").textContent = state.run;
  document.getElementById("tab-samples").textContent = state.samples ? "Samples" : "Samples (none yet)";
  setupControls();
  render();
  if (drafts.size) say(`${drafts.size} unsaved caption(s) from before the reload are back in their cards`);
  document.body.dataset.loaded = "1";
}

for (const id of ["sort", "descending", "filter-status", "filter-reason", "page-size"]) {
  document.getElementById(id).addEventListener("change", () => { page = 0; render(); saveControls(); });
}
document.querySelectorAll("nav .tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
load().catch((e) => say(e.message, true));
