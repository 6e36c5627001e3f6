// The WASM build's tests and figures, after `bash web/build.sh`:
//
//   node web/test/run.mjs [--out DIR] [--calls N] [--no-browser]
//
// For every bundled model (web/dist/models/index.json) it checks, in Node and then in headless
// Chromium (Debian's /usr/bin/chromium driven by playwright-core; any console error fails):
//   - predict(): forecast, interval, gate and the whole certificate against the native engine
//     (`tns predict MODEL -i WINDOW.json`) on fixed windows;
//   - replay(): every forecast of the model's table against `tns predict MODEL --data`;
//   - sessions (models without known-future inputs): each push equals predict() on its window;
// within TOLERANCE (the engines run f32 networks; WASM has no fused multiply-add). It then
// times predict() per call in Node, in Chromium and natively (`tns bench-inputs`), measures the
// time from page load to the first forecast, the .wasm size, takes a screenshot, and writes
// DIR/wasm.json and DIR/wasm.md (default results/wasm).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

import { modelRows, parseCsv } from '../csv.js';
import { serve } from '../serve.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST = join(ROOT, 'web/dist');
const TNS = process.env.TNS_BIN || join(ROOT, 'target/release/tns');
/** |wasm − native| ≤ TOLERANCE · max(1, |native|) for every number; all else exactly equal. */
const TOLERANCE = 1e-5;
const WINDOWS_PER_MODEL = 12;

const args = process.argv.slice(2);
const option = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : fallback; };
const OUT = join(ROOT, option('--out', 'results/wasm'));
const CALLS = Number(option('--calls', '100000'));
const BROWSER = !args.includes('--no-browser');
const failures = [];
const fail = (message) => { failures.push(message); console.error(`FAIL ${message}`); };

// ---- comparison ---------------------------------------------------------------------------
const diffs = { maxAbs: 0, maxRel: 0, numbers: 0 };
function compare(got, want, path) {
  if (typeof want === 'number' && typeof got === 'number') {
    diffs.numbers++;
    const abs = Math.abs(got - want);
    diffs.maxAbs = Math.max(diffs.maxAbs, abs);
    diffs.maxRel = Math.max(diffs.maxRel, abs / Math.max(1, Math.abs(want)));
    if (!(abs <= TOLERANCE * Math.max(1, Math.abs(want)))) fail(`${path}: ${got} vs native ${want}`);
    return;
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got) && !ArrayBuffer.isView(got)) return fail(`${path}: not an array`);
    if (got.length !== want.length) return fail(`${path}: length ${got.length} vs ${want.length}`);
    want.forEach((w, i) => compare(got[i], w, `${path}[${i}]`));
    return;
  }
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object') return fail(`${path}: ${JSON.stringify(got)} vs an object`);
    const keys = new Set([...Object.keys(want), ...Object.keys(got)]);
    for (const k of keys) compare(got[k] ?? null, want[k] ?? null, `${path}.${k}`);
    return;
  }
  if ((got ?? null) !== want) fail(`${path}: ${JSON.stringify(got)} vs native ${JSON.stringify(want)}`);
}

// ---- fixtures from the native engine ------------------------------------------------------
const work = mkdtempSync(join(tmpdir(), 'tns-wasm-'));
const tns = (...a) => execFileSync(TNS, a.map(String), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Fixed windows of the model's table: `{window, future, time}` as `tns predict -i` reads them. */
function fixtureInputs(model, rows) {
  const { lookback, horizon, lead } = model;
  const futureColumns = model.futureColumns.map((c) => model.features.indexOf(c));
  const span = futureColumns.length ? lookback + lead + horizon - 1 : lookback;
  const inputs = [];
  for (let k = 0; k < WINDOWS_PER_MODEL; k++) {
    const start = Math.floor(k * (rows.length - span) / WINDOWS_PER_MODEL);
    const origin = start + lookback - 1;
    inputs.push({
      window: rows.slice(start, origin + 1).map((r) => Array.from(r.values)),
      future: futureColumns.length
        ? rows.slice(origin + lead, origin + lead + horizon).map((r) => futureColumns.map((c) => r.values[c]))
        : null,
      time: model.needsTime ? rows[origin].timeText : null,
    });
  }
  return inputs;
}

function nativeCertificates(file, inputs) {
  return inputs.map((input, i) => {
    const path = join(work, `input-${i}.json`);
    // `tns predict -i` reads absent keys, not nulls.
    writeFileSync(path, JSON.stringify(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== null))));
    return JSON.parse(tns('predict', file, '-i', path));
  });
}

/** `tns predict MODEL --data TABLE`: forecasts keyed by `origin seconds|step|target`. */
function nativeReplay(file, table, id) {
  const out = join(work, `${id}-forecasts.csv`);
  tns('predict', file, '--data', table, '-o', out);
  const { header, rows } = parseCsv(readFileSync(out, 'utf8'));
  const col = (n) => header.indexOf(n);
  return new Map(rows.map((r) => [
    `${glue.parseTime(r[col('origin_time')])}|${r[col('step')]}|${r[col('target')]}`,
    { prediction: Number(r[col('prediction')]), lower: r[col('lower')] === '' ? null : Number(r[col('lower')]),
      upper: r[col('upper')] === '' ? null : Number(r[col('upper')]) },
  ]));
}

// ---- the checks, in any JS engine that has the wasm module (`tns` below) -------------------
/** Runs in Node and in the page (serialized): predictions, replay and sessions of one model. */
function runChecks(tnsModule, modelBytes, tableText, inputs, parse, rowsOf) {
  const model = new tnsModule.Model(modelBytes);
  const flat = (rows) => (rows ? Float64Array.from(rows.flat()) : undefined);
  const seconds = (t) => (t === null ? undefined : tnsModule.parseTime(t));
  const predicted = inputs.map((i) => model.predict(flat(i.window), flat(i.future), seconds(i.time)));
  const rows = rowsOf(parse(tableText), model, tnsModule.parseTime);
  const replay = model.replay(1);
  const replayed = [];
  for (const r of rows) {
    const f = replay.push(r.series, r.time, r.values);
    if (f) replayed.push({ origin: f.origin, prediction: Array.from(f.prediction), lower: f.lower && Array.from(f.lower), upper: f.upper && Array.from(f.upper) });
  }
  let sessionMismatches = null;
  if (model.futureColumns.length === 0 && !model.needsTime) {
    sessionMismatches = 0;
    const session = model.session();
    const f = model.features.length;
    rows.slice(0, 400).forEach((r, k) => {
      const out = session.push(r.values);
      if (k + 1 < model.lookback) { if (out !== null) sessionMismatches++; return; }
      const window = Float64Array.from(rows.slice(k + 1 - model.lookback, k + 1).flatMap((x) => Array.from(x.values)));
      const direct = model.predict(window);
      if (window.length !== model.lookback * f || out.prediction.some((v, j) => v !== direct.prediction[j])) sessionMismatches++;
    });
  }
  return { predicted, replayed, sessionMismatches, targets: model.targets, horizon: model.horizon };
}

/** Times predict() (with its certificate object) and forecast() (values only) per call. */
function timeCalls(tnsModule, modelBytes, inputs, calls, clock, block) {
  const model = new tnsModule.Model(modelBytes);
  const flat = (rows) => (rows ? Float64Array.from(rows.flat()) : undefined);
  const prepared = inputs.map((i) => [flat(i.window), flat(i.future), i.time === null ? undefined : tnsModule.parseTime(i.time)]);
  const result = {};
  for (const name of ['forecast', 'predict']) {
    const call = (k) => { const [w, f, t] = prepared[k % prepared.length]; return model[name](w, f, t); };
    for (let k = 0; k < calls / 10; k++) call(k);
    const samples = [];
    for (let k = 0; k < calls; k += block) {
      const start = clock();
      for (let j = 0; j < block; j++) call(k + j);
      samples.push((clock() - start) / block);
    }
    result[name] = samples;
  }
  return result;
}

function percentiles(samplesUs) {
  const s = [...samplesUs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length, samples: s.length };
}

function checkResults(where, id, got, native, replayNative) {
  got.predicted.forEach((p, i) => {
    const want = native[i];
    compare(p.certificate, want, `${where} ${id} window ${i} certificate`);
    compare(Array.from(p.prediction), want.prediction.flat(), `${where} ${id} window ${i} prediction`);
    if (want.interval) {
      compare(Array.from(p.lower), want.interval.lower.flat(), `${where} ${id} window ${i} lower`);
      compare(Array.from(p.upper), want.interval.upper.flat(), `${where} ${id} window ${i} upper`);
    }
    if (want.gate) compare(p.gatePassed, want.gate.passed, `${where} ${id} window ${i} gate`);
  });
  let matched = 0;
  const targets = got.targets.length;
  for (const f of got.replayed) {
    f.prediction.forEach((v, k) => {
      const key = `${f.origin}|${Math.floor(k / targets) + 1}|${got.targets[k % targets]}`;
      const want = replayNative.get(key);
      if (!want) return fail(`${where} ${id}: no native forecast ${key}`);
      matched++;
      compare(v, want.prediction, `${where} ${id} replay ${key}`);
      if (f.lower) { compare(f.lower[k], want.lower, `${where} ${id} replay ${key} lower`); compare(f.upper[k], want.upper, `${where} ${id} replay ${key} upper`); }
    });
  }
  if (matched !== replayNative.size) fail(`${where} ${id}: ${matched} replayed forecast values, native ${replayNative.size}`);
  if (got.sessionMismatches) fail(`${where} ${id}: ${got.sessionMismatches} session pushes differ from predict()`);
  return matched;
}

// ---- main ---------------------------------------------------------------------------------
const catalog = JSON.parse(readFileSync(join(DIST, 'models/index.json'), 'utf8'));
const wasmPath = join(DIST, 'pkg/tns_wasm_bg.wasm');
const wasmBytes = readFileSync(wasmPath);
const glue = await import(join(DIST, 'pkg/tns_wasm.js'));
glue.initSync({ module: wasmBytes });

const report = {
  tolerance: TOLERANCE, calls: CALLS,
  size: { wasm_bytes: wasmBytes.length, wasm_gzip_bytes: gzipSync(wasmBytes, { level: 9 }).length,
    glue_bytes: statSync(join(DIST, 'pkg/tns_wasm.js')).size },
  models: {}, node: { version: process.version }, browser: null,
};
// Bad input gets a clear error, never a panic (a panic would abort the module).
{
  const throws = (what, pattern, run) => {
    try { run(); } catch (e) { if (!pattern.test(String(e.message || e))) fail(`${what}: unexpected error ${e.message || e}`); return; }
    fail(`${what}: no error`);
  };
  const good = readFileSync(join(DIST, catalog[0].model));
  const tampered = Uint8Array.from(good);
  tampered[tampered.length >> 1] ^= 0xff;
  throws('tampered model', /checksum|sha-?256|tamper|corrupt/i, () => new glue.Model(tampered));
  throws('truncated model', /./, () => new glue.Model(good.subarray(0, 200)));
  const model = new glue.Model(good);
  throws('short window', /values|shape|expected/i, () => model.predict(new Float64Array(3)));
  const nan = new Float64Array(model.lookback * model.features.length).fill(1);
  nan[5] = NaN;
  throws('NaN in a window', /finite|NaN/i, () => model.predict(nan));
  const session = model.session();
  throws('short row', /./, () => session.push(new Float64Array(1)));
  if (session.observations !== 0) fail('a rejected row changed the session');
  if (!glue.timeZones().includes('Europe/Paris')) fail('the build lacks Europe/Paris');
  console.log('node: bad inputs give clear errors');
}

const fixtures = {};
for (const entry of catalog) {
  const modelBytes = readFileSync(join(DIST, entry.model));
  const tableText = readFileSync(join(DIST, entry.data), 'utf8');
  const probe = new glue.Model(modelBytes);
  const rows = modelRows(parseCsv(tableText), probe, glue.parseTime);
  const inputs = fixtureInputs(probe, rows);
  const native = nativeCertificates(join(DIST, entry.model), inputs);
  const replayNative = nativeReplay(join(DIST, entry.model), join(DIST, entry.data), entry.id);
  fixtures[entry.id] = { inputs, native, replayNative };
  const got = runChecks(glue, modelBytes, tableText, inputs, parseCsv, modelRows);
  const matched = checkResults('node', entry.id, got, native, replayNative);
  const inputsFile = join(work, `${entry.id}-inputs.json`);
  writeFileSync(inputsFile, JSON.stringify({ inputs }));
  const nativeOut = join(work, `${entry.id}-native.json`);
  tns('bench-inputs', join(DIST, entry.model), '--inputs', inputsFile, '--calls', CALLS, '--out', nativeOut);
  const nativeTimes = JSON.parse(readFileSync(nativeOut, 'utf8'));
  const clock = () => Number(process.hrtime.bigint()) / 1e3;
  const nodeTimes = timeCalls(glue, modelBytes, inputs, CALLS, clock, 1);
  report.models[entry.id] = {
    label: entry.label, kind: probe.kind, lookback: probe.lookback, horizon: probe.horizon,
    windows_checked: inputs.length, replay_values_checked: matched,
    native: { isa: nativeTimes.isa, forecast: nativeTimes.forecast, predict: nativeTimes.predict_with_certificate },
    node: { forecast: percentiles(nodeTimes.forecast), predict: percentiles(nodeTimes.predict) },
  };
  console.log(`node ${entry.id}: ${inputs.length} windows and ${matched} replayed values checked; predict P50 ${report.models[entry.id].node.predict.p50.toFixed(2)} µs`);
}
report.node.max_abs_diff = diffs.maxAbs;
report.node.max_rel_diff = diffs.maxRel;
report.node.numbers_compared = diffs.numbers;

if (BROWSER) {
  const { chromium } = await import('playwright-core');
  const server = await serve(0);
  const url = `http://127.0.0.1:${server.address().port}/`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    // Five loads: the first in a fresh browser (cold), then four more (a browser in use).
    const loads = [];
    for (let k = 0; k < 5; k++) {
      await page.goto(url);
      await page.evaluate(() => window.tns.ready);
      loads.push(await page.evaluate(() => ({ ...window.tns.timings, isolated: window.crossOriginIsolated })));
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const warm = loads.slice(1);
    report.browser = {
      version: browser.version(), cross_origin_isolated: loads[0].isolated, loads,
      first_forecast_ms: { cold: loads[0].firstForecast, warm_median: median(warm.map((l) => l.firstForecast)) },
      from_script_start_ms: { cold: loads[0].firstForecast - loads[0].scriptStart,
        warm_median: median(warm.map((l) => l.firstForecast - l.scriptStart)) },
      wasm_ready_ms: { cold: loads[0].wasmReady, warm_median: median(warm.map((l) => l.wasmReady)) },
      models: {},
    };
    diffs.maxAbs = 0; diffs.maxRel = 0; diffs.numbers = 0;
    for (const entry of catalog) {
      const { inputs, native, replayNative } = fixtures[entry.id];
      const got = await page.evaluate(async ({ entry, inputs, checks }) => {
        const mod = { Model: window.tns.Model, parseTime: window.tns.parseTime };
        const { parseCsv, modelRows } = await import('./csv.js');
        const bytes = new Uint8Array(await (await fetch(entry.model)).arrayBuffer());
        const table = await (await fetch(entry.data)).text();
        // eslint-disable-next-line no-new-func
        const run = new Function(`return (${checks})`)();
        return run(mod, bytes, table, inputs, parseCsv, modelRows);
      }, { entry, inputs, checks: runChecks.toString() });
      const matched = checkResults('chromium', entry.id, got, native, replayNative);
      const times = await page.evaluate(async ({ entry, inputs, calls, timer }) => {
        const mod = { Model: window.tns.Model, parseTime: window.tns.parseTime };
        const bytes = new Uint8Array(await (await fetch(entry.model)).arrayBuffer());
        const run = new Function(`return (${timer})`)();
        // Blocks of 100 calls: the page's clock ticks in microseconds at best.
        return run(mod, bytes, inputs, calls, () => performance.now() * 1e3, 100);
      }, { entry, inputs, calls: CALLS, timer: timeCalls.toString() });
      report.browser.models[entry.id] = { replay_values_checked: matched,
        forecast: percentiles(times.forecast), predict: percentiles(times.predict) };
      console.log(`chromium ${entry.id}: checked; predict mean ${report.browser.models[entry.id].predict.mean.toFixed(2)} µs`);
    }
    report.browser.max_abs_diff = diffs.maxAbs;
    report.browser.max_rel_diff = diffs.maxRel;
    // The screenshot: the demo replayed for a while.
    await page.evaluate(() => window.tns.advance(520));
    await page.waitForTimeout(100);
    mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: join(OUT, 'page.png') });
    if (catalog.some((c) => c.id === 'hourly')) {
      await page.evaluate(async () => { await window.tns.select('hourly'); window.tns.advance(700); });
      await page.waitForTimeout(100);
      await page.screenshot({ path: join(OUT, 'page-hourly.png') });
    }
    if (consoleErrors.length) fail(`browser console errors: ${consoleErrors.join(' | ')}`);
  } finally {
    await browser.close();
    server.close();
  }
}

mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'wasm.json'), JSON.stringify(report, null, 2) + '\n');
writeFileSync(join(OUT, 'wasm.md'), markdown(report));
console.log(markdown(report));
if (failures.length) {
  console.error(`${failures.length} check(s) failed`);
  process.exit(1);
}

function markdown(r) {
  const kb = (b) => `${(b / 1024).toFixed(0)} KiB`;
  const lines = [
    `\`.wasm\`: **${kb(r.size.wasm_bytes)}** raw, **${kb(r.size.wasm_gzip_bytes)}** gzip (-9), every network kind; JS glue ${kb(r.size.glue_bytes)}.`,
  ];
  if (r.browser) {
    const b = r.browser;
    lines.push(`First forecast after the page started loading (navigation start; Chromium ${b.version}, headless, page served from 127.0.0.1 on this machine): **${b.first_forecast_ms.cold.toFixed(0)} ms** in a fresh browser, **${b.first_forecast_ms.warm_median.toFixed(0)} ms** (median of 4 reloads) in a browser in use; of which the page's script, from its first line (engine compiled, model and table loaded, first window replayed), took ${b.from_script_start_ms.cold.toFixed(0)} ms and ${b.from_script_start_ms.warm_median.toFixed(0)} ms.`);
  }
  lines.push(
    `Predictions equal the native engine's within ${r.tolerance} relative (largest difference seen: ${r.node.max_rel_diff.toExponential(1)} in Node${r.browser ? `, ${r.browser.max_rel_diff.toExponential(1)} in Chromium` : ''}), certificates included.`,
    '',
    `Per forecast, µs (${r.calls.toLocaleString('en-US')} calls over ${WINDOWS_PER_MODEL} windows after a tenth as many warm-up calls; \`predict\` builds the certificate object, \`forecast\` returns the values only). Native: \`tns bench-inputs\`, per call. Node ${r.node.version}: per call. Chromium: per block of 100 calls (its clock is too coarse for one).`,
    '',
    '| model | call | native P50 | native P99 | Node P50 | Node P99 | Chromium P50 | Chromium P99 | Node / native (P50) |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  for (const [id, m] of Object.entries(r.models)) {
    for (const call of ['forecast', 'predict']) {
      const b = r.browser?.models[id]?.[call];
      lines.push(`| ${id} (${m.kind}, ${m.lookback}→${m.horizon}) | ${call} | ${m.native[call].p50.toFixed(2)} | ${m.native[call].p99.toFixed(2)} | ${m.node[call].p50.toFixed(2)} | ${m.node[call].p99.toFixed(2)} | ${b ? b.p50.toFixed(2) : '–'} | ${b ? b.p99.toFixed(2) : '–'} | ${(m.node[call].p50 / m.native[call].p50).toFixed(1)}× |`);
    }
  }
  return lines.join('\n') + '\n';
}
