// centrobind explore: the page's only script. Talks to the JSON API of `centrobind serve`.
"use strict";

const GLYPH = { text: "Aa", image: "▣", audio: "♪", features: "#" };
const BARS = 28;
let audioContext = null;
const state = { info: null, target: null, query: null, seq: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

async function api(path, options) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
  return body;
}

function showError(message) {
  const t = $("error");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

function modality(name) {
  return state.info.modalities.find((m) => m.name === name);
}

async function init() {
  try {
    state.info = await api("/api/modalities");
  } catch (e) {
    $("meta").textContent = "cannot reach the server";
    showError(e.message);
    return;
  }
  const info = state.info;
  const run = info.run.split("/").filter(Boolean).slice(-2).join("/");
  const corpus = info.corpus.split("/").filter(Boolean).pop();
  $("meta").replaceChildren(
    "run ", el("b", { text: run }), " · corpus ", el("b", { text: corpus }),
    ` · ${info.rows} rows · D = ${info.embed_dim}`,
  );
  const targets = info.modalities.filter((m) => m.indexed > 0);
  const preferred = targets.find((m) => m.kind === "image") || targets[0];
  for (const m of targets) {
    const b = el("button", {
      type: "button", role: "radio", "aria-checked": "false", "data-target": m.name,
      title: `${m.kind} · ${m.indexed} items`, onclick: () => setTarget(m.name, true),
    }, el("span", { class: "glyph", text: GLYPH[m.kind] || "#" }), m.name,
    el("span", { class: "count", text: String(m.indexed) }));
    $("targets").append(b);
  }
  if (preferred) setTarget(preferred.name, false);
  const texts = info.modalities.filter((m) => m.kind === "text");
  if (!texts.length) {
    $("q").disabled = true;
    $("q").placeholder = "This run has no text modality: drop a file or click a hit";
  }
  const files = info.modalities.filter((m) => m.kind === "image" || m.kind === "audio");
  if (!files.length) $("drop").hidden = true;
}

function setTarget(name, rerun) {
  state.target = name;
  for (const b of $("targets").children) {
    b.setAttribute("aria-checked", String(b.dataset.target === name));
  }
  if (rerun && state.query) search();
}

function setQuery(query) {
  state.query = query;
  const row = $("query-chip");
  if (query.kind === "text") { row.hidden = true; row.replaceChildren(); return; }
  $("q").value = "";
  const chip = el("span", { class: "chip" });
  if (query.thumb) chip.append(el("img", { src: query.thumb, alt: "" }));
  chip.append(el("span", { text: query.label }));
  chip.append(el("button", {
    class: "x", type: "button", title: "clear", "aria-label": "clear query",
    onclick: () => { state.query = null; row.hidden = true; row.replaceChildren(); },
  }, "×"));
  row.replaceChildren(chip);
  row.hidden = false;
}

// Runs query `q` (default: the current one); it becomes the current query only if it succeeds,
// so a rejected upload leaves the page as it was, with the server's message in a toast.
async function search(q = state.query) {
  if (!q || !state.target) return;
  const k = Number($("k").value);
  const seq = ++state.seq;
  document.body.classList.add("loading");
  try {
    let res;
    if (q.kind === "file") {
      const form = new FormData();
      form.append("file", q.file, q.file.name);
      form.append("target", state.target);
      form.append("k", String(k));
      res = await api("/api/search/file", { method: "POST", body: form });
    } else {
      const body = { target: state.target, k };
      if (q.kind === "text") body.text = q.text;
      else body.item = { modality: q.modality, row: q.row };
      res = await api("/api/search", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    }
    if (seq === state.seq) {
      if (q !== state.query) setQuery(q);
      render(res, q);
    }
  } catch (e) {
    if (seq === state.seq) showError(e.message);
  } finally {
    if (seq === state.seq) document.body.classList.remove("loading");
  }
}

function render(res, q) {
  const what = q.kind === "text" ? `“${q.text}”` : q.label;
  $("status").replaceChildren(
    el("b", { text: `${res.hits.length} hits` }), ` for ${what} in `,
    el("b", { text: res.target }), ` · ${Math.round(res.took_ms)} ms`,
  );
  $("empty").hidden = res.hits.length > 0;
  $("results").replaceChildren(...res.hits.map((h, i) => card(h, i + 1)));
}

function card(hit, rank) {
  const kind = modality(hit.modality).kind;
  const media = el("div", { class: `media ${kind}` });
  const useIt = () => searchWith(hit, kind);
  if (kind === "image" && hit.url) {
    const img = el("img", { src: hit.url, alt: `${hit.modality} row ${hit.row}`, loading: "lazy" });
    img.addEventListener("load", () => { if (img.naturalWidth < 96) img.classList.add("small"); });
    media.append(img);
    media.addEventListener("click", useIt);
  } else if (kind === "audio" && hit.url) {
    const wave = el("div", { class: "wave", "aria-hidden": "true" });
    for (let i = 0; i < BARS; i++) wave.append(el("span", { style: "height:4px" }));
    drawWave(wave, hit.url);
    media.append(wave, el("audio", { controls: "", preload: "metadata", src: hit.url }));
  } else if (kind === "text" && hit.text != null) {
    media.append(el("p", { text: hit.text }));
    media.addEventListener("click", useIt);
  } else {
    media.append(el("span", { text: `${hit.modality} row ${hit.row}` }));
    media.addEventListener("click", useIt);
  }
  media.append(el("span", { class: "rank", text: `#${rank}` }));
  const pct = Math.max(0, Math.min(100, 50 * (hit.score + 1)));
  const bar = el("div", { class: "bar" }, el("span", { style: `width:${pct.toFixed(1)}%` }));
  const tags = el("div", { class: "tags" });
  if (hit.split) tags.append(el("span", { class: `tag split-${hit.split}`, text: hit.split }));
  for (const [task, value] of Object.entries(hit.labels || {})) {
    tags.append(el("span", { class: "tag label", text: `${task}: ${value}` }));
  }
  const info = el("div", { class: "info" },
    el("div", { class: "scoreline" }, el("span", { class: "score", text: hit.score.toFixed(3) }), bar,
      el("span", { class: "row", text: `row ${hit.row}` })),
    tags,
    el("button", { class: "more", type: "button", onclick: useIt }, "Search with this →"),
  );
  return el("article", {
    class: `hit kind-${kind}`, "data-row": String(hit.row), "data-modality": hit.modality,
    "data-score": String(hit.score),
  }, media, info);
}

// The clip's real loudness envelope (peak per slice), decoded in the browser; flat if it cannot be.
async function drawWave(wave, url) {
  try {
    audioContext = audioContext || new OfflineAudioContext(1, 1, 16000);
    const data = await (await fetch(url)).arrayBuffer();
    const samples = (await audioContext.decodeAudioData(data)).getChannelData(0);
    const step = Math.max(1, Math.floor(samples.length / BARS));
    const peaks = [];
    for (let i = 0; i < BARS; i++) {
      let peak = 0;
      for (let j = i * step; j < Math.min(samples.length, (i + 1) * step); j++) {
        peak = Math.max(peak, Math.abs(samples[j]));
      }
      peaks.push(peak);
    }
    const top = Math.max(...peaks, 1e-6);
    peaks.forEach((p, i) => { wave.children[i].style.height = `${4 + Math.round(30 * p / top)}px`; });
    wave.dataset.drawn = "true";
  } catch (_) { /* leave the flat bars */ }
}

function searchWith(hit, kind) {
  const label = kind === "text" && hit.text ? `“${hit.text}”` : `${hit.modality} row ${hit.row}`;
  window.scrollTo({ top: 0, behavior: "smooth" });
  search({
    kind: "item", modality: hit.modality, row: hit.row, label: `similar to ${label}`,
    thumb: kind === "image" ? hit.url : null,
  });
}

function useFile(file) {
  if (!file) return;
  const isImage = file.type.startsWith("image/");
  search({
    kind: "file", file, label: file.name, thumb: isImage ? URL.createObjectURL(file) : null,
  });
}

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("q").value.trim();
  search(text ? { kind: "text", text } : state.query);
});
$("k").addEventListener("change", () => search());
$("file").addEventListener("change", (ev) => { useFile(ev.target.files[0]); ev.target.value = ""; });
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (ev) => { ev.preventDefault(); useFile(ev.dataTransfer.files[0]); });
init();
