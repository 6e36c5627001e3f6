// The page: loads the TNS engine (WebAssembly), a model and a table, replays the table row by
// row through the engine's replay (the row scorer behind `tns predict --data`) and draws the
// observed series, each forecast with its conformal interval, the Kalman prior and the gate's
// decision, with the latest certificate beside it.

import init, { Model, parseTime, version } from './pkg/tns_wasm.js';
import { parseCsv, modelRows } from './csv.js';

const $ = (id) => document.getElementById(id);
// Milliseconds since the page started loading (performance.now()).
const timings = { scriptStart: performance.now(), wasmReady: null, modelLoaded: null, firstForecast: null };
const state = {
  model: null, rows: [], next: 0, replay: null, playing: false,
  observed: [], forecasts: [], rowOfTime: new Map(), awaiting: new Map(), target: 0,
  latencyMs: 0, latencyCount: 0, covered: 0, scored: 0, passed: 0, gated: 0, latest: null,
};
let catalog = [];

function status(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function useModel(bytes, label) {
  const model = new Model(bytes);
  if (state.model) state.model.free();
  state.model = model;
  $('target-select').innerHTML = model.targets.map((t, i) => `<option value="${i}">${t}</option>`).join('');
  // The last target first: for the trajectory, a velocity, noisy enough to show the interval.
  state.target = model.targets.length - 1;
  $('target-select').value = String(state.target);
  const meta = model.metadata;
  const network = meta.config.network ? JSON.stringify(meta.config.network).replace(/[{}"]/g, '') : 'none';
  const rows = [
    ['name', `${model.name} (${label})`], ['kind', model.kind], ['network', network],
    ['window', `${model.lookback} rows × ${model.features.length} features`],
    ['forecast', `${model.horizon} step(s) of ${model.targets.join(', ')}`],
    ['known future', model.futureColumns.length ? model.futureColumns.join(', ') : (model.needsTime ? 'calendar only' : 'none')],
    ['sha256', model.sha256.slice(0, 16) + '…'], ['engine', `tns-wasm ${version()}`],
  ];
  $('meta').innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('');
}

function useTable(text) {
  state.lastText = text;
  const table = parseCsv(text);
  state.rows = modelRows(table, state.model, parseTime);
  reset();
}

function reset() {
  state.replay = state.model.replay(1);
  Object.assign(state, {
    next: 0, observed: [], forecasts: [], rowOfTime: new Map(), awaiting: new Map(), latencyMs: 0, latencyCount: 0,
    covered: 0, scored: 0, passed: 0, gated: 0, latest: null,
  });
  state.series = state.rows.length ? state.rows[0].series : null;
}

// Replays `n` rows; returns how many forecasts they completed.
function advance(n) {
  const model = state.model;
  const t = state.target;
  const targetColumn = model.features.indexOf(model.targets[t]);
  let made = 0;
  for (let k = 0; k < n && state.next < state.rows.length; k++) {
    const row = state.rows[state.next++];
    const started = performance.now();
    const forecast = state.replay.push(row.series, row.time, row.values);
    const elapsed = performance.now() - started;
    if (row.series !== state.series) continue;
    const index = state.observed.length;
    state.rowOfTime.set(row.time, index);
    state.observed.push(row.values[targetColumn]);
    // Score the step-1 intervals that were waiting for this row's outcome.
    for (const f of state.awaiting.get(index) ?? []) {
      state.scored++;
      if (row.values[targetColumn] >= f.lo && row.values[targetColumn] <= f.hi) state.covered++;
    }
    state.awaiting.delete(index);
    if (!forecast) continue;
    made++;
    state.latencyMs += elapsed; state.latencyCount++;
    if (timings.firstForecast === null) timings.firstForecast = performance.now();
    const origin = state.rowOfTime.get(forecast.origin);
    const targets = model.targets.length;
    const path = [];
    for (let s = 0; s < model.horizon; s++) {
      const j = s * targets + t;
      path.push({
        x: origin + model.lead + s, y: forecast.prediction[j], base: forecast.base[j],
        lo: forecast.lower ? forecast.lower[j] : undefined, hi: forecast.upper ? forecast.upper[j] : undefined,
      });
    }
    const passed = forecast.gatePassed ? forecast.gatePassed.every(Boolean) : null;
    if (passed !== null) { state.gated++; if (passed) state.passed++; }
    const record = { ...path[0], passed, path };
    // With known-future inputs the forecast is issued after its first outcome has arrived;
    // otherwise it waits for that row.
    if (record.lo !== undefined && record.x < state.observed.length) {
      state.scored++;
      const actual = state.observed[record.x];
      if (actual >= record.lo && actual <= record.hi) state.covered++;
    } else if (record.lo !== undefined) {
      if (!state.awaiting.has(record.x)) state.awaiting.set(record.x, []);
      state.awaiting.get(record.x).push(record);
    }
    state.forecasts.push(record);
    state.latest = forecast;
    if (state.forecasts.length > 4000) state.forecasts.splice(0, 1000);
  }
  return made;
}

function showStats() {
  $('stat-predictions').textContent = state.forecasts.length ? String(state.latencyCount) : '0';
  $('stat-gate').textContent = state.gated ? `${(100 * state.passed / state.gated).toFixed(1)}%` : '–';
  const nominal = state.latest?.certificate?.interval?.coverage;
  $('stat-coverage').textContent = state.scored
    ? `${(100 * state.covered / state.scored).toFixed(1)}%${nominal ? ` / ${(100 * nominal).toFixed(0)}%` : ''}` : '–';
  $('stat-latency').textContent = state.latencyCount ? (1000 * state.latencyMs / state.latencyCount).toFixed(1) : '–';
  $('stat-first').textContent = timings.firstForecast !== null ? timings.firstForecast.toFixed(1) : '–';
  $('stat-rows').textContent = String(state.next);
  const f = state.latest;
  if (!f) { $('verdict').textContent = 'no forecast yet'; $('verdict').className = 'verdict'; $('certificate').textContent = ''; return; }
  const gate = f.certificate.gate;
  if (gate) {
    const worst = Math.max(...gate.statistic.map((s) => (s === null ? Infinity : s)));
    const stat = gate.statistic.length > 1 ? `max over ${gate.statistic.length} steps d² = ${worst.toFixed(2)}` : `d² = ${worst.toFixed(2)}`;
    const ok = !f.fallbackUsed;
    const failedSteps = gate.passed.filter((p) => !p).length;
    $('verdict').textContent = ok
      ? `gate passed: ${stat} ≤ χ² threshold ${gate.threshold.toFixed(2)} (α = ${gate.alpha}); correction applied`
      : `gate failed on ${failedSteps} step(s): ${stat} > ${gate.threshold.toFixed(2)}; ${gate.mode === 'reject' ? 'those steps fell back to the prior' : gate.mode === 'shrink' ? 'correction shrunk onto the ellipsoid' : 'correction kept (mode keep)'}`;
    $('verdict').className = `verdict ${ok ? 'pass' : 'fail'}`;
  } else {
    $('verdict').textContent = `${state.model.kind}: no gate (no prior to test against)`;
    $('verdict').className = 'verdict';
  }
  $('certificate').textContent = JSON.stringify(f.certificate, null, 2);
}

function draw() {
  const canvas = $('chart');
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const pad = { left: 56, right: 16, top: 12, bottom: 40 };
  const span = Math.max(120, 6 * (state.model ? state.model.horizon : 1));
  const last = state.observed.length + (state.model ? state.model.lead + state.model.horizon : 0);
  const first = Math.max(0, last - span);
  const visible = state.forecasts.filter((f) => f.x >= first);
  const latestPath = visible.length ? visible[visible.length - 1].path : [];
  const ys = [
    ...state.observed.slice(first),
    ...visible.flatMap((f) => [f.y, f.base, f.lo, f.hi]),
    ...latestPath.flatMap((p) => [p.y, p.lo, p.hi]),
  ].filter((v) => v !== undefined && Number.isFinite(v));
  if (!ys.length) {
    g.fillStyle = color('--muted'); g.font = '14px system-ui';
    g.fillText(state.model ? 'Press ▶ Play to replay the table through the engine' : 'loading…', pad.left, height / 2);
    return;
  }
  let lo = Math.min(...ys), hi = Math.max(...ys);
  const margin = (hi - lo) * 0.08 || 1; lo -= margin; hi += margin;
  const X = (x) => pad.left + (x - first) / span * (width - pad.left - pad.right);
  const Y = (y) => pad.top + (hi - y) / (hi - lo) * (height - pad.top - pad.bottom);
  // Grid and axis labels.
  g.strokeStyle = '#243049'; g.fillStyle = color('--muted'); g.font = '11px system-ui'; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4;
    g.beginPath(); g.moveTo(pad.left, Y(v)); g.lineTo(width - pad.right, Y(v)); g.stroke();
    g.fillText(v.toFixed(Math.abs(hi - lo) < 10 ? 2 : 0), 6, Y(v) + 4);
  }
  g.fillText(`rows ${first}–${last} of series ${state.series ?? ''}`, pad.left, height - 8);
  // Conformal band of the one-step forecasts.
  const banded = visible.filter((f) => f.lo !== undefined);
  if (banded.length) {
    g.fillStyle = color('--band');
    g.beginPath();
    banded.forEach((f, i) => (i ? g.lineTo(X(f.x), Y(f.hi)) : g.moveTo(X(f.x), Y(f.hi))));
    [...banded].reverse().forEach((f) => g.lineTo(X(f.x), Y(f.lo)));
    g.closePath(); g.fill();
  }
  const line = (points, stroke, widthPx, dash = []) => {
    g.strokeStyle = stroke; g.lineWidth = widthPx; g.setLineDash(dash);
    g.beginPath();
    points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke(); g.setLineDash([]);
  };
  line(visible.map((f) => [f.x, f.base]), color('--prior'), 1.4, [5, 4]);
  line(visible.map((f) => [f.x, f.y]), color('--forecast'), 2.2);
  line(state.observed.slice(first).map((y, i) => [first + i, y]), color('--ink'), 1.3);
  // The latest forecast over its whole horizon, with its interval.
  if (latestPath.length > 1) {
    g.fillStyle = 'rgba(92, 200, 255, 0.15)';
    if (latestPath[0].lo !== undefined) {
      g.beginPath();
      latestPath.forEach((p, i) => (i ? g.lineTo(X(p.x), Y(p.hi)) : g.moveTo(X(p.x), Y(p.hi))));
      [...latestPath].reverse().forEach((p) => g.lineTo(X(p.x), Y(p.lo)));
      g.closePath(); g.fill();
    }
    line(latestPath.map((p) => [p.x, p.y]), color('--accent'), 2);
  }
  // Gate decisions along the bottom.
  for (const f of visible) {
    if (f.passed === null) continue;
    g.fillStyle = f.passed ? color('--pass') : color('--fail');
    const h = f.passed ? 6 : 14;
    g.fillRect(X(f.x) - 1, height - pad.bottom + 6, 2, h);
  }
}

let frame = null;
function loop() {
  if (!state.playing) return;
  advance(Number($('speed').value));
  draw(); showStats();
  if (state.next >= state.rows.length) { togglePlay(false); status('replay finished'); return; }
  frame = requestAnimationFrame(loop);
}

function togglePlay(on = !state.playing) {
  state.playing = on;
  $('play').textContent = on ? '❚❚ Pause' : '▶ Play';
  if (on) frame = requestAnimationFrame(loop); else cancelAnimationFrame(frame);
}

async function selectBundled(id) {
  const entry = catalog.find((c) => c.id === id);
  $('model-select').value = id;
  const [modelBytes, csv] = await Promise.all([fetchBytes(entry.model), fetch(entry.data).then((r) => r.text())]);
  useModel(modelBytes, entry.label);
  timings.modelLoaded ??= performance.now();
  useTable(csv);
  status(`${entry.label}: ${state.rows.length} rows`);
}

async function dropped(files) {
  try {
    for (const file of files) {
      if (file.name.endsWith('.tns')) { useModel(new Uint8Array(await file.arrayBuffer()), file.name); }
    }
    for (const file of files) {
      if (file.name.endsWith('.csv')) { useTable(await file.text()); status(`${file.name}: ${state.rows.length} rows`); }
    }
    // A new model alone replays the current table.
    if (!files.some((f) => f.name.endsWith('.csv')) && state.lastText) useTable(state.lastText);
    draw(); showStats();
  } catch (e) {
    status(String(e.message || e), true);
  }
}

async function main() {
  // The engine compiles while the catalog downloads.
  const catalogReady = fetch('models/index.json').then((r) => r.json());
  await init();
  timings.wasmReady = performance.now();
  catalog = await catalogReady;
  $('model-select').innerHTML = catalog.map((c) => `<option value="${c.id}">${c.label}</option>`).join('');
  await selectBundled(catalog[0].id);
  // The first forecast: replay until the first window is complete.
  while (state.latencyCount === 0 && state.next < state.rows.length) advance(1);
  draw(); showStats();
  $('play').onclick = () => togglePlay();
  $('step').onclick = () => { advance(1); draw(); showStats(); };
  $('reset').onclick = () => { togglePlay(false); reset(); draw(); showStats(); };
  $('speed').oninput = () => { $('speed-value').textContent = $('speed').value; };
  $('target-select').onchange = () => { state.target = Number($('target-select').value); reset(); draw(); showStats(); };
  $('model-select').onchange = async () => { togglePlay(false); await selectBundled($('model-select').value); draw(); showStats(); };
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); togglePlay(false); dropped([...e.dataTransfer.files]); };
  window.addEventListener('resize', draw);
  status(`ready · first forecast ${timings.firstForecast.toFixed(1)} ms after page load`);
}

// What the browser test reads and calls (web/test/run.mjs).
window.tns = {
  timings, state, Model, parseTime,
  ready: main().catch((e) => { status(String(e.message || e), true); throw e; }),
  advance: (n) => { const made = advance(n); draw(); showStats(); return made; },
  select: async (id) => { await selectBundled(id); draw(); showStats(); },
};
