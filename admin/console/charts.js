// Hand-rolled SVG charts (no libraries): every chart has a title, a description and a data table.

import { h, nextId, s } from './dom.js';

const WIDTH = 560;
const LEFT = 130; // room for row labels ("challenger (V2, 20%)")
const RIGHT = 140; // room for value labels
const BAND = 30;
const TOP = 26;

function frame(title, description, rows) {
  const titleId = nextId('chart');
  const descId = nextId('chart-desc');
  const height = TOP + rows * BAND + 8;
  const svg = s('svg', {
    viewBox: `0 0 ${WIDTH} ${height}`, role: 'img', 'aria-labelledby': `${titleId} ${descId}`, class: 'chart', preserveAspectRatio: 'xMinYMin meet',
  }, s('title', { id: titleId }, title), s('desc', { id: descId }, description));
  return { svg, height };
}

function xAxis(svg, height, ticks, x, format) {
  for (const t of ticks) {
    svg.append(
      s('line', { x1: x(t), x2: x(t), y1: TOP - 6, y2: height - 8, class: 'grid' }),
      s('text', { x: x(t), y: TOP - 10, 'text-anchor': 'middle', class: 'tick' }, format(t)));
  }
}

function rowLabel(svg, i, text) {
  svg.append(s('text', { x: LEFT - 10, y: TOP + i * BAND + BAND / 2 + 4, 'text-anchor': 'end', class: 'label' }, text));
}

function valueLabel(svg, i, text) {
  svg.append(s('text', { x: WIDTH - RIGHT + 10, y: TOP + i * BAND + BAND / 2 + 4, class: 'value' }, text));
}

const pct = (v) => `${Math.round(v * 1000) / 10}%`;

/** Rates in [0, 1] with confidence intervals: [{label, rate, ci: [lo, hi]}]. */
export function rateChart(items, { title, description }) {
  const { svg, height } = frame(title, description, items.length);
  const x = (v) => LEFT + v * (WIDTH - LEFT - RIGHT);
  xAxis(svg, height, [0, 0.25, 0.5, 0.75, 1], x, pct);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + BAND / 2;
    rowLabel(svg, i, item.label);
    if (item.rate === null || item.rate === undefined) {
      valueLabel(svg, i, 'no data');
      return;
    }
    if (item.ci) {
      const [lo, hi] = item.ci;
      svg.append(
        s('line', { x1: x(lo), x2: x(hi), y1: y, y2: y, class: 'ci' }),
        s('line', { x1: x(lo), x2: x(lo), y1: y - 6, y2: y + 6, class: 'ci' }),
        s('line', { x1: x(hi), x2: x(hi), y1: y - 6, y2: y + 6, class: 'ci' }));
    }
    svg.append(s('circle', { cx: x(item.rate), cy: y, r: 6, class: 'point' }));
    valueLabel(svg, i, item.ci ? `${pct(item.rate)} (${pct(item.ci[0])}–${pct(item.ci[1])})` : pct(item.rate));
  });
  return svg;
}

/** Durations: [{label, p50, p90, mean}] in seconds, drawn as a p50–p90 bar with a mean marker. */
export function durationChart(items, { title, description }) {
  const { svg, height } = frame(title, description, items.length);
  const max = Math.max(1, ...items.flatMap((d) => [d.p90 ?? 0, d.mean ?? 0])) * 1.1;
  const step = niceStep(max / 4);
  const ticks = [];
  for (let t = 0; t <= max; t += step) ticks.push(t);
  const x = (v) => LEFT + (v / max) * (WIDTH - LEFT - RIGHT);
  xAxis(svg, height, ticks, x, (t) => `${Math.round(t)} s`);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + BAND / 2;
    rowLabel(svg, i, item.label);
    if (item.p50 === null || item.p50 === undefined) {
      valueLabel(svg, i, 'no data');
      return;
    }
    svg.append(s('rect', { x: x(0), y: y - 2, width: x(item.p50) - x(0), height: 4, class: 'whisker' }));
    if (item.p90 !== null && item.p90 !== undefined) {
      svg.append(s('rect', { x: x(item.p50), y: y - 8, width: Math.max(1, x(item.p90) - x(item.p50)), height: 16, class: 'box' }));
    }
    svg.append(s('line', { x1: x(item.p50), x2: x(item.p50), y1: y - 10, y2: y + 10, class: 'median' }));
    if (item.mean !== null && item.mean !== undefined) {
      const m = x(item.mean);
      svg.append(s('path', { d: `M${m} ${y - 6} L${m + 6} ${y} L${m} ${y + 6} L${m - 6} ${y} Z`, class: 'mean' }));
    }
    valueLabel(svg, i, `p50 ${fmt(item.p50)} · p90 ${fmt(item.p90)}`);
  });
  return svg;
}

/** Sentiment shares: [{label, positive, neutral, negative}] (counts or rates), 100% stacked. */
export function sentimentChart(items, { title, description }) {
  const { svg, height } = frame(title, description, items.length);
  const x = (v) => LEFT + v * (WIDTH - LEFT - RIGHT);
  xAxis(svg, height, [0, 0.5, 1], x, pct);
  items.forEach((item, i) => {
    const y = TOP + i * BAND + 5;
    rowLabel(svg, i, item.label);
    const total = (item.positive ?? 0) + (item.neutral ?? 0) + (item.negative ?? 0);
    if (!total) {
      valueLabel(svg, i, 'no data');
      return;
    }
    let at = 0;
    for (const key of ['positive', 'neutral', 'negative']) {
      const share = (item[key] ?? 0) / total;
      if (share > 0) {
        svg.append(s('rect', { x: x(at), y, width: x(at + share) - x(at), height: BAND - 10, class: `sent-${key}` },
          s('title', {}, `${key} ${pct(share)}`)));
        if (share >= 0.12) svg.append(s('text', { x: x(at + share / 2), y: y + BAND / 2, 'text-anchor': 'middle', class: `sent-text sent-text-${key}` }, pct(share)));
      }
      at += share;
    }
    valueLabel(svg, i, `${pct((item.negative ?? 0) / total)} negative`);
  });
  return svg;
}

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
