// The modx dashboard: polls the API with a read key kept in this tab's session storage.
// window.modx exposes the drawn charts and what they hold (the browser test reads it).
"use strict";

const KEY = "modx.key";
const POLL_MS = 3000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const $ = (sel) => document.querySelector(sel);
const modx = (window.modx = { charts: {}, drawn: {}, data: {}, errors: [] });

// ---------------------------------------------------------------- the key

function takeKeyFromAddress() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("key")) return;
  sessionStorage.setItem(KEY, url.searchParams.get("key"));
  url.searchParams.delete("key");
  history.replaceState(null, "", url.pathname + url.search + url.hash); // the key leaves the address bar
}

function askForKey(message) {
  $("#board").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#key").focus();
}

class AuthError extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new AuthError("");
  const headers = { Authorization: `Bearer ${key}`, ...(options.headers || {}) };
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401 || resp.status === 403) {
    sessionStorage.removeItem(KEY);
    const body = await resp.json().catch(() => ({}));
    throw new AuthError((body.detail && body.detail.message) || `the key was refused (${resp.status})`);
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return options.raw ? resp : resp.json();
}

// ---------------------------------------------------------------- tables

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  return td;
}

const shortTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "-");

function drawPhases(phases) {
  const body = $("#phases tbody");
  body.replaceChildren();
  for (const p of phases) {
    const row = body.insertRow();
    cell(row, p.phase);
    cell(row, p.status, `status-${p.status}`);
    cell(row, p.n);
    cell(row, `${p.n_train ?? "-"} / ${p.n_probe ?? "-"}`);
    cell(row, shortTime(p.opened));
    cell(row, shortTime(p.sealed));
    cell(row, p.reason);
  }
}

function recipeText(s) {
  const r = s.recipe || {};
  const keys = ["epochs", "lr", "alpha", "replay_fraction"].filter((k) => k in r);
  return [s.method || r.method, ...keys.map((k) => `${k}=${r[k]}`)].filter(Boolean).join(" ");
}

const snapshotOf = (s) => s.snapshot ?? s.version; // `version` before the API named it `snapshot`

function drawSnapshots(snapshots, serving) {
  const body = $("#snapshots tbody");
  body.replaceChildren();
  for (const s of snapshots) {
    const row = body.insertRow();
    const version = snapshotOf(s);
    cell(row, `v${version}`);
    cell(row, s.parent === null || s.parent === undefined ? "-" : `v${s.parent}`);
    cell(row, s.phase);
    cell(row, recipeText(s)).title = JSON.stringify(s.recipe || {});
    cell(row, s.status, `status-${s.status}`);
    cell(row, s.reason);
    const isServing = serving && serving.snapshot === version;
    cell(row, isServing ? `serving (index v${serving.index})` : "", isServing ? "serving" : "");
  }
  $("#serving").textContent = serving && serving.snapshot !== undefined
    ? `serving: snapshot v${serving.snapshot}, index v${serving.index}` : "serving: nothing yet";
}

const r1 = (rec) => (rec ? (rec.i2t.r1 + rec.t2i.r1) / 2 : null);
const probesOf = (rows) => [...new Set(rows.flatMap((s) => Object.keys(s.recall)))].sort((a, b) => a - b);

function heat(value) {
  const v = Math.max(0, Math.min(1, value));
  return `hsl(${Math.round(10 + 110 * v)}, 70%, ${Math.round(88 - 30 * v)}%)`;
}

function drawHeatmap(rows) {
  const old = $("#old-gallery").checked;
  const probes = probesOf(rows);
  const head = $("#heatmap thead");
  head.replaceChildren();
  const hr = head.insertRow();
  cell(hr, "snapshot");
  probes.forEach((p) => cell(hr, `phase ${p}`));
  const body = $("#heatmap tbody");
  body.replaceChildren();
  for (const s of rows) {
    const row = body.insertRow();
    row.dataset.snapshot = s.snapshot;
    cell(row, `v${s.snapshot}` + (old ? ` (gallery v${s.old_gallery_snapshot})` : ""));
    for (const p of probes) {
      const rec = (old ? s.old_gallery : s.recall)[p];
      const td = cell(row, rec ? `${rec.i2t.r1.toFixed(2)} / ${rec.t2i.r1.toFixed(2)}` : "-");
      if (rec) {
        td.style.background = heat(r1(rec));
        td.dataset.r1 = r1(rec).toFixed(4);
      }
    }
  }
  modx.drawn.heatmap = rows.map((s) => s.snapshot);
}

// ---------------------------------------------------------------- charts (uPlot)

function chart(name, opts, data) {
  const el = document.getElementById(name);
  const width = el.classList.contains("small") ? 340 : Math.min(900, Math.max(400, el.clientWidth || 800));
  const height = el.classList.contains("small") ? 200 : 280;
  const old = modx.charts[name];
  if (old && old.series.length === opts.series.length) {
    old.setData(data);
  } else {
    if (old) old.destroy();
    modx.charts[name] = new uPlot({ width, height, ...opts }, data, el);
  }
  return modx.charts[name];
}

function drawLines(rows) {
  const probes = probesOf(rows);
  const xs = rows.map((s) => s.snapshot);
  const data = [xs, ...probes.map((p) => rows.map((s) => r1(s.recall[p])))];
  const series = [
    { label: "snapshot" },
    ...probes.map((p, i) => ({ label: `phase ${p}`, stroke: COLORS[i % COLORS.length], width: 2, points: { size: 7 } })),
  ];
  chart("lines", {
    scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [{ label: "snapshot", values: (u, v) => v.map((x) => (Number.isInteger(x) ? `v${x}` : "")) }, { label: "R@1" }],
    series,
  }, data);
  modx.drawn.lines = xs.filter((_, i) => probes.some((_, j) => data[j + 1][i] !== null));
}

const binLabels = (bins) => bins.slice(0, -1).map((lo, i) => `${lo}-${bins[i + 1]}`);

function histogram(name, parts) {
  // parts: [{label, hist}] drawn as bars side by side per bin
  const bins = parts[0].hist.bins;
  const xs = binLabels(bins).map((_, i) => i);
  const n = parts.length;
  const series = [{ label: "bin" }, ...parts.map((p, i) => ({
    label: `${p.label} (mean ${p.hist.mean === null ? "-" : p.hist.mean.toFixed(1)})`,
    fill: COLORS[i] + "cc", stroke: COLORS[i], width: 1,
    paths: uPlot.paths.bars({ size: [0.8 / n, 60], align: n === 1 ? 0 : (i === 0 ? -1 : 1) }),
    points: { show: false },
  }))];
  const labels = binLabels(bins);
  chart(name, {
    scales: { x: { time: false, range: [-0.6, xs.length - 0.4] }, y: { range: [0, 1] } },
    axes: [{ values: (u, v) => v.map((x) => labels[x] ?? ""), splits: () => xs }, { label: "fraction" }],
    series,
  }, [xs, ...parts.map((p) => p.hist.fractions)]);
  return parts.reduce((sum, p) => sum + p.hist.counts.reduce((a, b) => a + b, 0), 0);
}

function fillSelect(select, options) {
  const current = select.value;
  const values = options.map(([value]) => value);
  if (values.join() !== [...select.options].map((o) => o.value).join()) {
    select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  }
  select.value = values.includes(current) ? current : values[values.length - 1] ?? "";
}

function drawDrift() {
  const transitions = modx.data.drift || [];
  fillSelect($("#transition"), transitions.map((t) => [String(t.to), `v${t.from} -> v${t.to}`]));
  const t = transitions.find((x) => String(x.to) === $("#transition").value);
  if (!t) return;
  const probes = Object.keys(t.domains || {});
  fillSelect($("#drift-probe"), [...probes.map((p) => [p, `phase ${p}'s probe`]), ["pooled", "every probe pooled"]]);
  const scope = $("#drift-probe").value;
  const d = scope === "pooled" ? t.pooled : t.domains[scope];
  if (!d) return;
  const totals = {
    sam: histogram("hist-sam", [{ label: "image", hist: d.sam_change.image }, { label: "text", hist: d.sam_change.text }]),
    ram: histogram("hist-ram", [{ label: "image", hist: d.ram.image }, { label: "text", hist: d.ram.text }]),
    imav: histogram("hist-imav", [{ label: "image-text pairs", hist: d.imav }]),
  };
  modx.drawn.drift = { to: t.to, from: t.from, scope, totals };
}

function drawTimeline(samples) {
  const xs = samples.map((s) => s.t);
  const rate = samples.map((s, i) => {
    const prev = samples[i - 1];
    if (!prev || s.pairs === null || prev.pairs === null) return null;
    return Math.max(0, (s.pairs - prev.pairs) / (s.t - prev.t));
  });
  const line = (label, color) => [{}, { label, stroke: color, width: 2, fill: color + "22", spanGaps: false }];
  const clock = (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false }));
  const opts = (label, color) => ({
    scales: { x: { time: true } }, series: line(label, color), axes: [{ values: clock, space: 70 }, { size: 50 }],
  });
  chart("ts-rate", opts("pairs/s", COLORS[0]), [xs, rate]);
  chart("ts-lag", opts("lag", COLORS[1]), [xs, samples.map((s) => s.lag)]);
  chart("ts-fill", opts("pairs", COLORS[2]), [xs, samples.map((s) => s.fill)]);
  modx.drawn.timeline = samples.length;
}

// ---------------------------------------------------------------- search

const imageUrls = new Map();

async function imageUrl(id) {
  if (!imageUrls.has(id)) {
    const resp = await api(`/v1/images/${encodeURIComponent(id)}`, { raw: true });
    imageUrls.set(id, URL.createObjectURL(await resp.blob()));
  }
  return imageUrls.get(id);
}

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function search(event) {
  event.preventDefault();
  const file = $("#query-image").files[0];
  const body = { k: Number($("#k").value) || 8 };
  if (file) body.image = await fileAsBase64(file);
  else body.text = $("#query").value.trim();
  if (!body.text && !body.image) return;
  const info = $("#search-info");
  const results = $("#results");
  try {
    const answer = await api("/v1/search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    info.textContent = `${answer.results.length} results from snapshot v${answer.snapshot}, index v${answer.index}`;
    const figures = await Promise.all(answer.results.map(async (hit) => {
      const fig = document.createElement("figure");
      fig.className = "hit";
      const img = document.createElement("img");
      img.alt = hit.text;
      img.src = await imageUrl(hit.id);
      const cap = document.createElement("figcaption");
      cap.textContent = `${hit.score.toFixed(3)}  ${hit.text}`;
      fig.append(img, cap);
      return fig;
    }));
    results.replaceChildren(...figures);
  } catch (e) {
    if (e instanceof AuthError) return askForKey(e.message);
    info.textContent = `search failed: ${e.message}`;
  }
}

// ---------------------------------------------------------------- polling

async function refresh() {
  const [phases, snapshots, recall, drift, timeline] = await Promise.all([
    api("/v1/phases"), api("/v1/snapshots"), api("/v1/recall"), api("/v1/drift"), api("/v1/timeline"),
  ]);
  const byVersion = (a, b) => a.snapshot - b.snapshot;
  modx.data = {
    phases: phases.phases, snapshots: snapshots.snapshots, serving: snapshots.serving,
    recall: recall.snapshots.slice().sort(byVersion), drift: drift.transitions.slice().sort((a, b) => a.to - b.to),
    timeline: timeline.samples,
  };
  $("#login").hidden = true;
  $("#board").hidden = false;
  drawPhases(modx.data.phases);
  drawSnapshots(modx.data.snapshots.slice().sort((a, b) => snapshotOf(a) - snapshotOf(b)), modx.data.serving);
  drawHeatmap(modx.data.recall);
  if (modx.data.recall.length) drawLines(modx.data.recall);
  drawDrift();
  drawTimeline(modx.data.timeline);
  modx.updated = Date.now();
  $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function loop() {
  try {
    await refresh();
  } catch (e) {
    if (e instanceof AuthError) {
      askForKey(e.message);
      return; // until a key is given
    }
    modx.errors.push(String(e));
    $("#updated").textContent = `update failed: ${e.message}`;
  }
  setTimeout(loop, POLL_MS);
}

function start() {
  takeKeyFromAddress();
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    loop();
  });
  $("#forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); askForKey(""); });
  $("#old-gallery").addEventListener("change", () => drawHeatmap(modx.data.recall || []));
  $("#transition").addEventListener("change", drawDrift);
  $("#drift-probe").addEventListener("change", drawDrift);
  $("#search").addEventListener("submit", search);
  $("#query-image").addEventListener("change", () => { if ($("#query-image").files.length) $("#query").value = ""; });
  if (sessionStorage.getItem(KEY)) loop();
  else askForKey("");
}

start();
