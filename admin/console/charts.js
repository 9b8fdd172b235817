// Hand-rolled SVG charts (no libraries): every chart has a title, a description and a data table.

import { h, nextId, s } from './dom.js';

const MIN_WIDTH = 560;
const PLOT_MIN = 240; // the plot keeps at least this much width, however long the labels
const BAND = 30;
const TOP = 26;
// Upper bounds of a glyph's width (px) at the label (13px bold) and value (12px) font sizes: the
// margins are sized from the longest text, so "challenger (Draft, 20%)" or a rate with its
// interval is never clipped at the edge of the drawing.
const LABEL_CHAR = 8.2;
const VALUE_CHAR = 7.2;

/** An SVG chart with one band per row, margins wide enough for every row and value label. */
function frame(title, description, labels, values) {
  const titleId = nextId('chart');
  const descId = nextId('chart-desc');
  const longest = (texts, px) => Math.ceil(Math.max(0, ...texts.map((t) => String(t).length)) * px);
  const left = 20 + longest(labels, LABEL_CHAR);
  const right = 20 + longest(values, VALUE_CHAR);
  const width = Math.max(MIN_WIDTH, left + PLOT_MIN + right);
  const height = TOP + labels.length * BAND + 8;
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`, class: 'chart', preserveAspectRatio: 'xMinYMin meet',
  }, s('title', { id: titleId }, title), s('desc', { id: descId }, description));
  labels.forEach((text, i) => svg.append(
    s('text', { x: left - 10, y: TOP + i * BAND + BAND / 2 + 4, 'text-anchor': 'end', class: 'label' }, text)));
  values.forEach((text, i) => svg.append(
    s('text', { x: width - right + 10, y: TOP + i * BAND + BAND / 2 + 4, class: 'value' }, text)));
  // x maps a fraction of the plot's width (0 to 1) to a position.
  return { svg, height, x: (f) => left + f * (width - left - right) };
}

function xAxis(svg, height, ticks, x, format) {
  for (const t of ticks) {
    svg.append(
      s('line', { x1: x(t), x2: x(t), y1: TOP - 6, y2: height - 8, class: 'grid' }),
      s('text', { x: x(t), y: TOP - 10, 'text-anchor': 'middle', class: 'tick' }, format(t)));
  }
}

const pct = (v) => `${Math.round(v * 1000) / 10}%`;
const missing = (v) => v === null || v === undefined;

/** Rates in [0, 1] with confidence intervals: [{label, rate, ci: [lo, hi]}]. */
export function rateChart(items, { title, description }) {
  const values = items.map((item) => (missing(item.rate) ? 'no data'
    : item.ci ? `${pct(item.rate)} (${pct(item.ci[0])}–${pct(item.ci[1])})` : pct(item.rate)));
  const { svg, height, x } = frame(title, description, items.map((item) => item.label), values);
  xAxis(svg, height, [0, 0.25, 0.5, 0.75, 1], x, pct);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + BAND / 2;
    if (missing(item.rate)) return;
    if (item.ci) {
      const [lo, hi] = item.ci;
      svg.append(
        s('line', { x1: x(lo), x2: x(hi), y1: y, y2: y, class: 'ci' }),
        s('line', { x1: x(lo), x2: x(lo), y1: y - 6, y2: y + 6, class: 'ci' }),
        s('line', { x1: x(hi), x2: x(hi), y1: y - 6, y2: y + 6, class: 'ci' }));
    }
    svg.append(s('circle', { cx: x(item.rate), cy: y, r: 6, class: 'point' }));
  });
  return svg;
}

/** Durations: [{label, p50, p90, mean}] in seconds, drawn as a p50–p90 bar with a mean marker. */
export function durationChart(items, { title, description }) {
  const values = items.map((item) => (missing(item.p50) ? 'no data' : `p50 ${fmt(item.p50)} · p90 ${fmt(item.p90)}`));
  const { svg, height, x: at } = frame(title, description, items.map((item) => item.label), values);
  const max = Math.max(1, ...items.flatMap((d) => [d.p90 ?? 0, d.mean ?? 0])) * 1.1;
  const step = niceStep(max / 4);
  const ticks = [];
  for (let t = 0; t <= max; t += step) ticks.push(t);
  const x = (v) => at(v / max);
  xAxis(svg, height, ticks, x, (t) => `${Math.round(t)} s`);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + BAND / 2;
    if (missing(item.p50)) return;
    svg.append(s('rect', { x: x(0), y: y - 2, width: x(item.p50) - x(0), height: 4, class: 'whisker' }));
    if (!missing(item.p90)) {
      svg.append(s('rect', { x: x(item.p50), y: y - 8, width: Math.max(1, x(item.p90) - x(item.p50)), height: 16, class: 'box' }));
    }
    svg.append(s('line', { x1: x(item.p50), x2: x(item.p50), y1: y - 10, y2: y + 10, class: 'median' }));
    if (!missing(item.mean)) {
      const m = x(item.mean);
      svg.append(s('path', { d: `M${m} ${y - 6} L${m + 6} ${y} L${m} ${y + 6} L${m - 6} ${y} Z`, class: 'mean' }));
    }
  });
  return svg;
}

/** Sentiment shares: [{label, positive, neutral, negative}] (counts or rates), 100% stacked. */
export function sentimentChart(items, { title, description }) {
  const total = (item) => (item.positive ?? 0) + (item.neutral ?? 0) + (item.negative ?? 0);
  const values = items.map((item) => (total(item) ? `${pct((item.negative ?? 0) / total(item))} negative` : 'no data'));
  const { svg, height, x } = frame(title, description, items.map((item) => item.label), values);
  xAxis(svg, height, [0, 0.5, 1], x, pct);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + 5;
    if (!total(item)) return;
    let at = 0;
    for (const key of ['positive', 'neutral', 'negative']) {
      const share = (item[key] ?? 0) / total(item);
      if (share > 0) {
        svg.append(s('rect', { x: x(at), y, width: x(at + share) - x(at), height: BAND - 10, class: `sent-${key}` },
          s('title', {}, `${key} ${pct(share)}`)));
        if (share >= 0.12) svg.append(s('text', { x: x(at + share / 2), y: y + BAND / 2, 'text-anchor': 'middle', class: `sent-text sent-text-${key}` }, pct(share)));
      }
      at += share;
    }
  });
  return svg;
}

const TREND = { width: 720, height: 260, left: 64, right: 16, top: 16, bottom: 36 };

/** A value over time per series: [{label, points: [{t, value}]}], one line each (a gap where
 * a value is null), on a shared time axis from `since` to `until` (Dates). */
export function trendChart(series, { title, description, since, until, format }) {
  const titleId = nextId('chart');
  const descId = nextId('chart-desc');
  const { width, height, left, right, top, bottom } = TREND;
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`, class: 'chart trend', preserveAspectRatio: 'xMinYMin meet',
  }, s('title', { id: titleId }, title), s('desc', { id: descId }, description));
  const values = series.flatMap((line) => line.points.map((p) => p.value)).filter((v) => !missing(v));
  const max = Math.max(0, ...values) || 1;
  const step = niceStep(max / 4);
  const ceiling = Math.ceil(max / step) * step;
  const span = Math.max(1, until - since);
  const x = (t) => left + ((new Date(t) - since) / span) * (width - left - right);
  const y = (v) => height - bottom - (v / ceiling) * (height - top - bottom);
  for (let v = 0; v <= ceiling + step / 2; v += step) {
    svg.append(
      s('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: left - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, format(v)));
  }
  // About six ticks on whole days (or whole hours for a short range), labelled in UTC.
  const unit = span > 2 * 86_400_000 ? 86_400_000 : 3_600_000;
  const every = unit * Math.max(1, Math.ceil(span / unit / 6));
  for (let t = Math.ceil(since / every) * every; t < until.getTime(); t += every) {
    const iso = new Date(t).toISOString();
    const text = unit === 86_400_000 ? iso.slice(5, 10) : iso.slice(11, 16);
    svg.append(s('line', { x1: x(t), x2: x(t), y1: top, y2: height - bottom, class: 'grid' }),
      s('text', { x: x(t), y: height - bottom + 18, 'text-anchor': 'middle', class: 'tick' }, text));
  }
  series.forEach((line, i) => {
    const cls = `series-${i % SERIES_COLOURS}`;
    let path = '';
    let pen = 'M';
    for (const p of line.points) {
      if (missing(p.value)) {
        pen = 'M';
        continue;
      }
      path += `${pen}${x(p.t).toFixed(1)} ${y(p.value).toFixed(1)} `;
      pen = 'L';
      svg.append(s('circle', { cx: x(p.t), cy: y(p.value), r: 3, class: `dot ${cls}` },
        s('title', {}, `${line.label}, ${p.t}: ${format(p.value)}`)));
    }
    if (path) svg.append(s('path', { d: path.trim(), class: `line ${cls}` }));
  });
  return svg;
}

// Distinct line colours (style.css .series-0 … .series-5); more series reuse them.
export const SERIES_COLOURS = 6;

export function legend(entries) {
  return h('ul', { class: 'legend' }, entries.map(([cls, text]) => h('li', {}, h('span', { class: `swatch ${cls}`, 'aria-hidden': 'true' }), text)));
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const n = raw / power;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * power;
}

function fmt(seconds) {
  return seconds === null || seconds === undefined ? '—' : `${Math.round(seconds)} s`;
}
