// Shared pieces: role-guarded buttons, version pickers, the diff view.

import { reasonFor } from './api.js';
import { h, nextId, versionLabel } from './dom.js';

/**
 * A button the current role may or may not press. When it may not, the button is disabled and
 * the reason is shown beside it (and tied to it with aria-describedby).
 */
export function guardedButton(label, { needs, what, onclick, kind = '', type = 'button', id, ariaLabel } = {}) {
  const reason = needs ? reasonFor(needs, what ?? label) : null;
  const button = h('button', {
    type, class: kind, onclick, id, disabled: Boolean(reason), title: reason ?? undefined, 'aria-label': ariaLabel,
  }, label);
  if (!reason) return button;
  const note = h('span', { class: 'reason', id: nextId('why') }, `Needs ${needs} role`);
  button.setAttribute('aria-describedby', note.id);
  return h('span', { class: 'guarded' }, button, note);
}

/** A <select> of "Draft" and the given versions (newest first); value '' is the draft. */
export function versionSelect(versions, current, { id, label } = {}) {
  const select = h('select', { id, 'aria-label': label },
    h('option', { value: 'draft' }, 'Draft (live, unpublished)'),
    versions.map((v) => h('option', { value: String(v.version) }, `V${v.version} — ${v.name}`)));
  select.value = current === null || current === undefined ? 'draft' : String(current);
  return select;
}

export function parseVersionValue(value) {
  return value === 'draft' || value === '' ? null : Number(value);
}

// --- diff ------------------------------------------------------------------------------------

/** JSON with keys sorted, so equal configurations print identically. */
export function stableJson(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
    return v;
  };
  return JSON.stringify(sort(value), null, 2);
}

/** A line diff (longest common subsequence): [{op: ' '|'-'|'+', text}]. */
export function lineDiff(beforeText, afterText) {
  const a = beforeText.split('\n');
  const b = afterText.split('\n');
  // Trim the common head and tail so the quadratic table covers only the changed middle.
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head += 1;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail += 1;
  const x = a.slice(head, a.length - tail);
  const y = b.slice(head, b.length - tail);
  const lcs = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i -= 1) {
    for (let j = y.length - 1; j >= 0; j -= 1) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = a.slice(0, head).map((text) => ({ op: ' ', text }));
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      out.push({ op: ' ', text: x[i] }); i += 1; j += 1;
    } else if (i < x.length && (j === y.length || lcs[i + 1][j] >= lcs[i][j + 1])) {
      out.push({ op: '-', text: x[i] }); i += 1;
    } else {
      out.push({ op: '+', text: y[j] }); j += 1;
    }
  }
  return out.concat(a.slice(a.length - tail).map((text) => ({ op: ' ', text })));
}

const CONTEXT_LINES = 3;

/** Unified-diff rendering with unchanged runs folded to CONTEXT_LINES around each change. */
export function renderLineDiff(lines, { fromLabel, toLabel }) {
  const keep = new Array(lines.length).fill(false);
  lines.forEach((line, k) => {
    if (line.op === ' ') return;
    for (let d = -CONTEXT_LINES; d <= CONTEXT_LINES; d += 1) if (lines[k + d]) keep[k + d] = true;
  });
  const rows = [];
  let skipped = 0;
  lines.forEach((line, k) => {
    if (!keep[k]) { skipped += 1; return; }
    if (skipped) rows.push(h('div', { class: 'diff-skip' }, `… ${skipped} unchanged lines`));
    skipped = 0;
    const cls = line.op === '+' ? 'diff-add' : line.op === '-' ? 'diff-del' : 'diff-ctx';
    const sr = line.op === '+' ? 'added: ' : line.op === '-' ? 'removed: ' : '';
    rows.push(h('div', { class: cls }, h('span', { class: 'sr-only' }, sr), `${line.op} ${line.text}`));
  });
  if (skipped && rows.length) rows.push(h('div', { class: 'diff-skip' }, `… ${skipped} unchanged lines`));
  if (!rows.length) return h('p', { class: 'muted' }, 'No differences.');
  return h('div', { class: 'diff-lines', role: 'region', tabindex: '0', 'aria-label': `Line diff from ${fromLabel} to ${toLabel}` },
    h('div', { class: 'diff-head' }, `--- ${fromLabel}`), h('div', { class: 'diff-head' }, `+++ ${toLabel}`), rows);
}

const SECTION_TITLES = {
  name: 'Name', prompt: 'Prompt', llm: 'LLM', voice: 'Voice', 'turn-taking': 'Turn-taking',
  'background sound': 'Background sound', tools: 'Tools', 'knowledge bases': 'Knowledge bases',
  analysis: 'Call analysis', workflow: 'Workflow',
};

/** The API's readable summary: [{section, changes: [..]}]. */
export function renderSummary(summary) {
  if (!summary || !summary.length) return h('p', { class: 'muted' }, 'No differences: the configurations are identical.');
  return h('dl', { class: 'diff-summary' }, summary.map((group) => [
    h('dt', {}, SECTION_TITLES[group.section] ?? group.section),
    group.changes.map((change) => h('dd', {}, change)),
  ]));
}

/** Summary plus line diff between two configs, labelled. */
export function diffView({ summary, before, after, fromLabel, toLabel }) {
  return h('div', { class: 'diff' },
    h('h3', {}, `Changes from ${fromLabel} to ${toLabel}`),
    renderSummary(summary),
    h('details', { open: true }, h('summary', {}, 'Line by line'),
      renderLineDiff(lineDiff(stableJson(before), stableJson(after)), { fromLabel, toLabel })));
}

export { versionLabel };
