// Drive the dashboard in the machine's headless Chromium (playwright-core, no downloaded browser).
//
//   node tests/browser/dashboard.mjs <dashboard url> <admin key or ""> <screenshot.png>
//
// Waits (at most 20 s) until every chart (<svg data-chart>) has drawn data points, takes a
// full-page screenshot, and prints one JSON line: per chart its data-points and, from a screenshot
// of the chart's box decoded here, how many pixels differ from the background and how many are
// coloured (the data marks are coloured; axes, grid lines and text are grey, so an empty chart
// has almost no coloured pixel); the settlement links and routing decisions listed; console and
// page errors. Every request not going to 127.0.0.1 is blocked and reported. Exit status: 0 when
// every chart has data, 1 when the wait timed out, 2 when the browser could not be driven.

import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const [url, key, png] = process.argv.slice(2);
if (!url || key === undefined || !png) {
  console.error('usage: node tests/browser/dashboard.mjs <dashboard url> <admin key or ""> <screenshot.png>');
  process.exit(2);
}
const WAIT_MS = Number(process.env.DASHBOARD_WAIT_MS || 20000);
const CHROMIUM = process.env.CLAWROUTER_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// A last resort: never outlive the caller's patience (the test also kills us by pid).
setTimeout(() => { console.error('dashboard.mjs: overall timeout'); process.exit(2); }, WAIT_MS + 40000).unref();

/** Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are) into RGBA. */
function decodePng(buffer) {
  if (buffer.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let offset = 8, width = 0, height = 0, depth = 0, type = 0, interlace = 0;
  const idat = [];
  while (offset < buffer.length) {
    const length = buffer.readUInt32BE(offset), name = buffer.toString('latin1', offset + 4, offset + 8);
    const data = buffer.subarray(offset + 8, offset + 8 + length);
    if (name === 'IHDR') {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4);
      depth = data[8]; type = data[9]; interlace = data[12];
    } else if (name === 'IDAT') idat.push(data);
    else if (name === 'IEND') break;
    offset += 12 + length;
  }
  const channels = { 2: 3, 6: 4 }[type];
  if (depth !== 8 || !channels || interlace) throw new Error(`unsupported PNG (depth ${depth}, type ${type})`);
  const raw = inflateSync(Buffer.concat(idat)), stride = width * channels;
  const rgba = Buffer.alloc(width * height * 4), prev = Buffer.alloc(stride), line = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? line[i - channels] : 0, b = prev[i], c = i >= channels ? prev[i - channels] : 0;
      let p;
      if (filter === 0) p = 0;
      else if (filter === 1) p = a;
      else if (filter === 2) p = b;
      else if (filter === 3) p = (a + b) >> 1;
      else if (filter === 4) {
        const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`bad PNG filter ${filter}`);
      line[i] = (src[i] + p) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      rgba[o] = line[x * channels]; rgba[o + 1] = line[x * channels + 1]; rgba[o + 2] = line[x * channels + 2];
      rgba[o + 3] = channels === 4 ? line[x * channels + 3] : 255;
    }
    line.copy(prev);
  }
  return { width, height, rgba };
}

/** Pixels differing from the background (the most common colour), and coloured ones among them. */
function countPixels(image) {
  const { width, height, rgba } = image, counts = new Map();
  for (let o = 0; o < rgba.length; o += 4) {
    const k = (rgba[o] << 16) | (rgba[o + 1] << 8) | rgba[o + 2];
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  let bg = 0, best = -1;
  for (const [k, n] of counts) if (n > best) { best = n; bg = k; }
  const br = bg >> 16, bgG = (bg >> 8) & 0xff, bb = bg & 0xff;
  let pixels = 0, colored = 0;
  for (let o = 0; o < rgba.length; o += 4) {
    const r = rgba[o], g = rgba[o + 1], b = rgba[o + 2];
    if (Math.max(Math.abs(r - br), Math.abs(g - bgG), Math.abs(b - bb)) <= 24) continue;
    pixels++;
    if (Math.max(r, g, b) - Math.min(r, g, b) > 40) colored++;
  }
  return { width, height, pixels, colored, background: '#' + bg.toString(16).padStart(6, '0') };
}

const result = { url, screenshot: png, ok: false, charts: {}, settlementLinks: [], settlements: 0, decisions: [],
  status: '', banner: '', consoleErrors: [], pageErrors: [], blocked: [], elapsedMs: 0 };
const started = Date.now();
let browser, code = 2;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30000 });
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    httpCredentials: key ? { username: 'admin', password: key } : undefined,
    serviceWorkers: 'block',
  });
  await context.route('**/*', (route) => {
    const target = new URL(route.request().url());
    if (target.hostname === '127.0.0.1') return route.continue();
    result.blocked.push(target.href);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') result.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => result.pageErrors.push(String(e && e.stack || e)));
  const response = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  result.httpStatus = response ? response.status() : null;
  try {
    await page.waitForFunction(() => {
      const charts = [...document.querySelectorAll('svg[data-chart]')];
      return charts.length > 0 && charts.every((c) => Number(c.getAttribute('data-points')) > 0);
    }, null, { timeout: WAIT_MS, polling: 200 });
    result.ok = true;
  } catch (e) {
    result.waitError = String(e.message || e).split('\n')[0];
  }
  // A viewport as tall as the page: nothing scrolls, so the sticky header never covers a chart.
  const fullHeight = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 1280, height: Math.min(Math.max(900, fullHeight), 8000) });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  for (const chart of await page.$$('svg[data-chart]')) {
    const name = await chart.getAttribute('data-chart');
    const points = Number(await chart.getAttribute('data-points'));
    result.charts[name] = { points, ...countPixels(decodePng(await chart.screenshot({ animations: 'disabled' }))) };
  }
  await page.screenshot({ path: png, fullPage: true, animations: 'disabled' });
  Object.assign(result, await page.evaluate(() => ({
    settlementLinks: [...document.querySelectorAll('#settlements a[href]')].map((a) => ({
      href: a.getAttribute('href'), text: a.textContent, target: a.getAttribute('target'), rel: a.getAttribute('rel'),
    })),
    settlements: document.querySelectorAll('#settlements li.settlement').length,
    decisions: [...document.querySelectorAll('#decisions li.decision')].map((li) => ({
      text: li.querySelector('.row').textContent, explanation: li.querySelector('.explain').textContent,
    })),
    status: document.getElementById('status-text').textContent,
    banner: document.getElementById('banner').textContent,
  })));
  result.pngBytes = readFileSync(png).length;
  code = result.ok ? 0 : 1;
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  result.elapsedMs = Date.now() - started;
  if (browser) await browser.close().catch(() => {});
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(code);
