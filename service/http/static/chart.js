// The site chart: grid current per phase, the EVSEs' total (highest phase) and the fuse over
// the last minutes, as SVG lines. A sample is [unix s, grid L1, L2, L3, EVSE L1, L2, L3] in A
// (grid values null without a grid meter).

import { t } from './texts.js';

const NS = 'http://www.w3.org/2000/svg';
const H = 200;
const PAD = { left: 34, right: 6, top: 8, bottom: 20 };
export const WINDOW_S = 600;

const SERIES = [
  { cls: 'l1', label: () => t('chart.grid', { phase: 'L1' }), value: (s) => s[1] },
  { cls: 'l2', label: () => t('chart.grid', { phase: 'L2' }), value: (s) => s[2] },
  { cls: 'l3', label: () => t('chart.grid', { phase: 'L3' }), value: (s) => s[3] },
  { cls: 'evse', label: () => t('chart.evses'), value: (s) => Math.max(s[4], s[5], s[6]) },
];

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function legend(list) {
  list.replaceChildren();
  for (const s of [...SERIES, { cls: 'fuse', label: () => t('chart.fuse') }]) {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = `swatch ${s.cls}`;
    item.append(swatch, s.label());
    list.append(item);
  }
}

// Points of one series as polyline segments, broken where a value is missing or samples
// are further apart than a few intervals (the service was down).
function segments(samples, value, x, y) {
  const out = [];
  let current = [];
  let last = null;
  for (const s of samples) {
    const v = value(s);
    if (v === null || v === undefined || Number.isNaN(v) || (last !== null && s[0] - last > 10)) {
      if (current.length > 1) out.push(current);
      current = [];
    }
    if (v !== null && v !== undefined && !Number.isNaN(v)) current.push(`${x(s[0]).toFixed(1)},${y(v).toFixed(1)}`);
    last = s[0];
  }
  if (current.length > 1) out.push(current);
  return out;
}

export function drawChart(svg, history, fuseA, now = Date.now() / 1000) {
  // Drawn in the SVG's own pixels, so that lines and labels keep their size on any screen.
  const W = Math.max(200, Math.round(svg.clientWidth || 640));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const start = now - WINDOW_S;
  const samples = history.filter((s) => s[0] >= start);
  let top = Math.max(1, fuseA * 1.15);
  for (const s of samples) for (const series of SERIES) top = Math.max(top, (series.value(s) ?? 0) * 1.05);
  const x = (ts) => PAD.left + ((ts - start) / WINDOW_S) * (W - PAD.left - PAD.right);
  const y = (a) => H - PAD.bottom - (a / top) * (H - PAD.top - PAD.bottom);
  const parts = [];
  const step = top > 80 ? 20 : top > 40 ? 10 : 5;
  for (let a = 0; a <= top; a += step) {
    parts.push(el('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: y(a), y2: y(a) }));
    parts.push(el('text', { class: 'tick', x: 2, y: y(a) + 4 }, `${a} A`));
  }
  for (const [label, ts] of [['−10 min', start], ['−5 min', start + WINDOW_S / 2]]) {
    parts.push(el('text', { class: 'tick', x: x(ts) + 2, y: H - 4 }, label));
  }
  if (fuseA > 0) {
    parts.push(el('line', { class: 'line fuse', x1: PAD.left, x2: W - PAD.right, y1: y(fuseA), y2: y(fuseA) }));
  }
  for (const series of SERIES) {
    for (const points of segments(samples, series.value, x, y)) {
      parts.push(el('polyline', { class: `line ${series.cls}`, points: points.join(' ') }));
    }
  }
  if (samples.length < 2) {
    parts.push(el('text', { class: 'tick', x: W / 2 - 50, y: H / 2 }, t('chart.empty')));
  }
  svg.replaceChildren(...parts);
}
