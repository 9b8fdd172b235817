// Channels: which agent version each number serves, A/B tests, guardrails and a dry run.

import { api, can, listAll, query, reasonFor } from './api.js';
import {
  announce, clearFieldErrors, field, fill, h, nextId, openDialog, showFieldError, time, versionLabel,
} from './dom.js';
import { limits } from './limits.js';
import { openRollout } from './rollouts.js';
import { guardedButton, parseVersionValue, versionSelect } from './widgets.js';

// Names for the server's guardrail metrics and operators (limits.js); one the console does not
// know yet shows as it is.
const METRIC_NAMES = {
  automation_rate: 'Automation rate (0–1)',
  negative_sentiment_share: 'Negative sentiment share (0–1)',
  mean_duration_s: 'Mean duration (seconds)',
};
const OP_NAMES = { '<': 'below', '>': 'above' };

/**
 * The guardrail rules of a channel as an editable table. `load()` resolves false when the
 * server has no guardrails endpoint; `save()` PUTs the rules.
 */
export class GuardrailsEditor {
  constructor(number) {
    this.path = `${channelPath(number)}/guardrails`;
    this.rows = [];
    this.list = h('tbody');
    this.initial = '[]';
  }

  async load() {
    const rules = (await api('GET', this.path)).rules ?? [];
    rules.forEach((rule) => this.add(rule));
    this.initial = JSON.stringify(this.collect());
  }

  add(rule = {}) {
    const metrics = [...limits.guardrailMetrics];
    if (rule.metric && !metrics.includes(rule.metric)) metrics.push(rule.metric);
    const metric = h('select', { 'aria-label': 'Metric' }, metrics.map((v) => h('option', { value: v }, METRIC_NAMES[v] ?? v)));
    metric.value = rule.metric ?? metrics[0];
    const op = h('select', { 'aria-label': 'Breaks when the metric is' }, limits.guardrailOps.map((v) => h('option', { value: v }, `${OP_NAMES[v] ?? v} (${v})`)));
    op.value = rule.op ?? limits.guardrailOps[0];
    const threshold = h('input', { type: 'number', step: 'any', value: String(rule.threshold ?? ''), 'aria-label': 'Threshold', class: 'short' });
    const minCalls = h('input', { type: 'number', min: '1', step: '1', value: String(rule.min_calls ?? limits.defaultMinCalls), 'aria-label': 'Minimum calls before the rule applies', class: 'short' });
    const entry = { metric, op, threshold, minCalls };
    const tr = h('tr', {}, h('td', {}, metric), h('td', {}, op), h('td', {}, threshold), h('td', {}, minCalls),
      h('td', {}, h('button', { type: 'button', class: 'small', 'aria-label': 'Remove this rule', onclick: () => { this.rows.splice(this.rows.indexOf(entry), 1); tr.remove(); } }, 'Remove')));
    this.rows.push(entry);
    this.list.append(tr);
  }

  collect() {
    return this.rows.map((r) => ({
      metric: r.metric.value, op: r.op.value,
      threshold: r.threshold.value === '' ? null : Number(r.threshold.value),
      min_calls: Number(r.minCalls.value),
    }));
  }

  get changed() {
    return JSON.stringify(this.collect()) !== this.initial;
  }

  async save() {
    await api('PUT', this.path, { body: { rules: this.collect() } });
    this.initial = JSON.stringify(this.collect());
  }

  /** Put the server's `rules[i].field` problems at their inputs. */
  showProblems(error) {
    for (const p of error.problems) {
      const m = /^rules\[(\d+)\]\.(\w+)$/.exec(p.path);
      const r = m && this.rows[Number(m[1])];
      const input = r && { metric: r.metric, op: r.op, threshold: r.threshold, min_calls: r.minCalls }[m[2]];
      if (input) showFieldError(input, p.message);
    }
  }

  element({ readOnly, hint = 'A variant that confidently breaks a rule (e.g. automation rate below 0.5, once it has the minimum number of calls) loses its weight, so its callers move to the other variants.' } = {}) {
    return h('fieldset', { class: 'guardrails' }, h('legend', {}, 'Guardrails'),
      h('p', { class: 'hint' }, hint),
      h('table', { class: 'table' }, h('caption', { class: 'sr-only' }, 'Guardrail rules'),
        h('thead', {}, h('tr', {}, ['Metric', 'Breaks when', 'Threshold', 'Min calls', ''].map((t) => h('th', { scope: 'col' }, t)))), this.list),
      h('button', { type: 'button', onclick: () => this.add(), disabled: readOnly }, 'Add rule'));
  }
}

/** The channel path; the number keeps its literal `+` (E.164), anything else is escaped. */
export function channelPath(number) {
  return `/v1/channels/${encodeURIComponent(number).replace(/^%2B/, '+')}`;
}

class Catalogue {
  /** Agents and their published versions, loaded lazily for the dropdowns. */
  constructor() {
    this.agents = [];
    this.versions = new Map();
  }

  async load() {
    this.agents = await listAll('/v1/agents');
  }

  name(agentId) {
    return this.agents.find((a) => a.id === agentId)?.name ?? agentId;
  }

  async versionsOf(agentId) {
    if (!agentId) return [];
    if (!this.versions.has(agentId)) {
      this.versions.set(agentId, await listAll(`/v1/agents/${encodeURIComponent(agentId)}/versions`));
    }
    return this.versions.get(agentId);
  }

  agentSelect(current, { id, label } = {}) {
    const select = h('select', { id, 'aria-label': label },
      h('option', { value: '' }, '— choose an agent —'),
      this.agents.map((a) => h('option', { value: a.id }, a.name)));
    select.value = current ?? '';
    return select;
  }
}

/** An agent select and a version select that follows it. */
export async function agentVersionPair(catalogue, agentId, version, { idPrefix, labelPrefix = '' } = {}) {
  const agent = catalogue.agentSelect(agentId, { id: `${idPrefix}-agent` });
  const slot = h('span', { class: 'version-slot' });
  const pair = { agent, version: null, slot };
  const loadVersions = async (value, { latest = false } = {}) => {
    const versions = await catalogue.versionsOf(agent.value);
    // An agent just picked serves its latest published version, not its live draft, by default.
    const current = latest ? versions[0]?.version ?? null : value;
    pair.version = versionSelect(versions, current, { id: `${idPrefix}-version` });
    pair.version.disabled = !agent.value;
    fill(slot, pair.version);
  };
  agent.addEventListener('change', () => loadVersions(null, { latest: true }));
  await loadVersions(version);
  pair.agentRow = h('div', { class: 'field' }, h('label', { for: agent.id }, `${labelPrefix}Agent`), agent);
  pair.versionRow = h('div', { class: 'field' }, h('label', { for: `${idPrefix}-version` }, `${labelPrefix}Version`), slot);
  return pair;
}

class ChannelsPage {
  constructor(main) {
    this.main = main;
    this.catalogue = new Catalogue();
  }

  async render() {
    await this.catalogue.load();
    this.listSection = h('section', { class: 'card', 'aria-labelledby': 'channels-title' });
    fill(this.main,
      h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Channels')),
      h('div', { class: 'columns' }, this.listSection,
        h('div', { class: 'side' }, await this.pinForm(), this.dryRun())));
    await this.renderList();
  }

  async renderList() {
    const channels = await listAll('/v1/channels');
    this.channels = channels;
    const rows = await Promise.all(channels.map((c) => this.row(c)));
    fill(this.listSection,
      h('h2', { id: 'channels-title' }, 'Numbers'),
      channels.length
        ? h('table', { class: 'table channels' },
          h('thead', {}, h('tr', {}, ['Number', 'Routing', 'Sticky', 'Changed', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows))
        : h('p', { class: 'muted' }, 'No numbers yet. Pin one with the form.'));
  }

  async row(channel) {
    const number = channel.number;
    const rowId = `ch-${number.replace('+', '')}`;
    let routing;
    if (channel.variants.length === 1) {
      const v = channel.variants[0];
      const versions = await this.catalogue.versionsOf(v.agent_id);
      const select = versionSelect(versions, v.version, { id: `${rowId}-version`, label: `Version served on ${number}` });
      select.disabled = !can('publisher');
      const apply = guardedButton('Apply', {
        needs: 'publisher', what: 'Pinning', kind: 'small', ariaLabel: `Apply the version for ${number}`,
        onclick: () => this.pin(number, v.agent_id, parseVersionValue(select.value)),
      });
      if (apply instanceof HTMLButtonElement) {
        // Nothing to apply until the dropdown names another version.
        apply.disabled = true;
        select.addEventListener('change', () => { apply.disabled = parseVersionValue(select.value) === v.version; });
      }
      routing = h('div', { class: 'pin' },
        h('a', { href: `#/agents/${encodeURIComponent(v.agent_id)}` }, this.catalogue.name(v.agent_id)), ' ', select, ' ', apply);
    } else {
      const total = channel.variants.reduce((sum, v) => sum + v.weight, 0) || 1;
      routing = h('div', {},
        h('span', { class: 'badge' }, 'A/B test'),
        h('ul', { class: 'variants' }, channel.variants.map((v) => h('li', {},
          weightBar(v.weight / total),
          h('strong', {}, shareText(v.weight, total)), ` ${v.label}: ${this.catalogue.name(v.agent_id)} ${versionLabel(v.version)}`))));
    }
    return h('tr', { id: rowId, dataset: { number } },
      h('th', { scope: 'row' }, h('code', {}, number)),
      h('td', {}, routing),
      h('td', {}, channel.sticky === 'caller' ? 'by caller' : 'per call'),
      h('td', {}, time(channel.updated_at), h('div', { class: 'muted' }, `rev ${channel.revision} · ${channel.updated_by}`)),
      h('td', { class: 'row-actions' }, h('div', {},
        guardedButton(channel.variants.length > 1 ? 'Edit A/B test…' : 'Start A/B test…', {
          needs: 'publisher', what: 'A/B tests', kind: 'small', ariaLabel: `A/B test on ${number}`,
          onclick: () => this.openAb(channel),
        }),
        h('button', { type: 'button', class: 'small', onclick: () => this.openGuardrails(channel), 'aria-label': `Guardrails of ${number}` }, 'Guardrails…'),
        h('button', { type: 'button', class: 'small', onclick: async () => { await openRollout(channel, this.catalogue); await this.renderList(); }, 'aria-label': `Rollout on ${number}` }, 'Rollout…'),
        guardedButton('Remove', {
          needs: 'publisher', what: 'Removing numbers', kind: 'small danger-text', ariaLabel: `Remove ${number}`,
          onclick: () => this.remove(number),
        }))));
  }

  async pin(number, agentId, version) {
    if (version === null && !(await confirmDraftPin(number))) return;
    try {
      await api('PUT', channelPath(number), { body: { agent_id: agentId, version } });
      await this.renderList();
      announce(`${number} now serves ${this.catalogue.name(agentId)} ${versionLabel(version)}.`, 'success');
    } catch (error) {
      announce(`Could not pin ${number}: ${error.message}`, 'error');
    }
  }

  async remove(number) {
    const choice = await openDialog({
      title: `Remove ${number}?`,
      body: h('p', {}, 'Calls to this number will get the fallback answer until it is pinned again.'),
      actions: [{ label: 'Cancel', value: null }, { label: 'Remove', value: 'remove', kind: 'danger' }],
    });
    if (choice !== 'remove') return;
    await api('DELETE', channelPath(number));
    await this.renderList();
    announce(`${number} removed.`);
  }

  async pinForm() {
    const number = field('Phone number (E.164)', h('input', { type: 'tel', id: 'pin-number', placeholder: '+14155550100', autocomplete: 'off' }));
    const pair = await agentVersionPair(this.catalogue, '', null, { idPrefix: 'pin' });
    const error = h('p', { class: 'form-error', role: 'alert' });
    const form = h('form', { class: 'card', 'aria-labelledby': 'pin-title', novalidate: true },
      h('h2', { id: 'pin-title' }, 'Pin a number'),
      number.row, pair.agentRow, pair.versionRow, error,
      h('div', { class: 'actions' }, guardedButton('Pin', { needs: 'publisher', what: 'Pinning', type: 'submit', kind: 'primary', id: 'pin-submit' })));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      error.textContent = '';
      const target = number.input.value.trim();
      if (!limits.e164.test(target)) {
        showFieldError(number.input, 'Use E.164: a + then the country code and number, digits only.');
        number.input.focus();
        return;
      }
      if (!pair.agent.value) {
        showFieldError(pair.agent, 'Choose the agent this number serves.');
        pair.agent.focus();
        return;
      }
      const version = parseVersionValue(pair.version.value);
      if (version === null && !(await confirmDraftPin(target))) return;
      try {
        await api('PUT', channelPath(target), { body: { agent_id: pair.agent.value, version } });
        number.input.value = '';
        await this.renderList();
        announce(`${target} now serves ${this.catalogue.name(pair.agent.value)} ${versionLabel(version)}.`, 'success');
      } catch (e) {
        const byPath = { number: number.input, agent_id: pair.agent, version: pair.version, '$.agent_id': pair.agent, '$.version': pair.version };
        e.problems.forEach((p) => byPath[p.path] && showFieldError(byPath[p.path], p.message));
        error.textContent = e.message;
      }
    });
    return form;
  }

  // --- A/B editor ---------------------------------------------------------------------------

  async openAb(channel) {
    const rows = [];
    const list = h('tbody');
    const total = h('output', { id: 'ab-total', 'aria-live': 'polite' });
    const error = h('div', { class: 'form-error', role: 'alert' });
    const addRow = async (variant) => {
      const index = nextId('var');
      const label = h('input', { type: 'text', value: variant.label, 'aria-label': 'Label', class: 'short', maxlength: String(limits.labelChars) });
      const pair = await agentVersionPair(this.catalogue, variant.agent_id, variant.version, { idPrefix: index });
      pair.agent.setAttribute('aria-label', 'Agent');
      const weight = h('input', { type: 'number', min: '0', max: String(limits.maxWeight), step: '1', value: String(variant.weight), 'aria-label': 'Weight', class: 'pct' });
      weight.addEventListener('input', update);
      const share = h('output', { class: 'share', 'aria-label': 'Share of calls' });
      const row = { label, pair, weight, share };
      const remove = h('button', { type: 'button', class: 'small', 'aria-label': 'Remove this variant', onclick: () => { rows.splice(rows.indexOf(row), 1); tr.remove(); update(); } }, 'Remove');
      const tr = h('tr', {}, h('td', {}, label), h('td', {}, pair.agent), h('td', {}, pair.slot), h('td', {}, weight), h('td', {}, share), h('td', {}, remove));
      rows.push(row);
      list.append(tr);
      update();
    };
    const weightOf = (r) => Number(r.weight.value) || 0;
    function update() {
      const sum = rows.reduce((acc, r) => acc + weightOf(r), 0);
      for (const r of rows) r.share.textContent = sum > 0 ? shareText(weightOf(r), sum) : '—';
      total.textContent = sum > 0 ? `Total weight ${sum}` : 'Total weight 0: no variant would get calls';
      total.className = sum > 0 ? 'ok' : 'bad';
      if (sum > 0) error.replaceChildren();
    }
    // The weights as stored: the editor shows and saves exactly these, never rescaled.
    const current = channel.variants.map((v) => ({ ...v }));
    for (const v of current) await addRow(v);
    if (current.length === 1) {
      // Starting a test from a plain pin: keep the pin as control, propose a challenger.
      rows[0].label.value = current[0].label === 'default' ? 'control' : current[0].label;
      rows[0].weight.value = '80';
      const versions = await this.catalogue.versionsOf(current[0].agent_id);
      const challenger = versions.find((v) => v.version !== current[0].version)?.version ?? null;
      await addRow({ label: 'challenger', agent_id: current[0].agent_id, version: challenger, weight: 20 });
    }
    let saved = null;
    const guardrails = new GuardrailsEditor(channel.number);
    await guardrails.load();
    const stickyName = nextId('sticky');
    const sticky = h('fieldset', { class: 'radios' }, h('legend', {}, 'Sticky mode'),
      [['caller', 'By caller: a caller keeps their variant on every call (recommended)'],
        ['call', 'Per call: each call is drawn again by its call id']].map(([value, text]) => h('label', {},
        h('input', { type: 'radio', name: stickyName, value, checked: channel.sticky === value }), ' ', text)));
    const body = h('div', {},
      h('p', {}, `Split calls to ${channel.number} between variants. Weights are whole numbers of 0 or more, stored as you enter them; each variant gets its weight divided by the total (weights 3 and 1 send 75% and 25% of calls).`),
      h('table', { class: 'table ab-editor' },
        h('caption', { class: 'sr-only' }, 'Variants'),
        h('thead', {}, h('tr', {}, ['Label', 'Agent', 'Version', 'Weight', 'Share', ''].map((t) => h('th', { scope: 'col' }, t)))),
        list),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => addRow({ label: `variant-${rows.length + 1}`, agent_id: current[0].agent_id, version: null, weight: 0 }) }, 'Add variant'),
        total),
      sticky,
      guardrails.element(),
      error);
    await openDialog({
      title: `A/B test on ${channel.number}`, wide: true, body,
      actions: [{ label: 'Cancel', value: null }, { label: 'Save and start', value: 'save', kind: 'primary' }],
      onAction: async () => {
        clearFieldErrors(body);
        error.replaceChildren();
        if (rows.reduce((acc, r) => acc + weightOf(r), 0) <= 0) {
          error.textContent = 'Give at least one variant a weight above 0.';
          rows[0]?.weight.focus();
          return false;
        }
        const variants = rows.map((r) => ({
          label: r.label.value.trim(), agent_id: r.pair.agent.value,
          version: parseVersionValue(r.pair.version.value), weight: Number(r.weight.value),
        }));
        const mode = body.querySelector(`input[name="${stickyName}"]:checked`)?.value ?? 'caller';
        try {
          await api('PUT', channelPath(channel.number), { body: { variants, sticky: mode } });
        } catch (e) {
          for (const p of e.problems) {
            const m = /^variants\[(\d+)\]\.(\w+)$/.exec(p.path);
            const r = m && rows[Number(m[1])];
            const input = r && { label: r.label, agent_id: r.pair.agent, version: r.pair.version, weight: r.weight }[m[2]];
            if (input) showFieldError(input, p.message);
          }
          error.textContent = `Not saved: ${e.message}${e.problems.length ? ` — ${e.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}` : ''}`;
          return false;
        }
        saved = variants;
        if (guardrails.changed) {
          try {
            await guardrails.save();
          } catch (e) {
            guardrails.showProblems(e);
            error.textContent = `The variants are saved, but the guardrails are not: ${e.message}`;
            return false;
          }
        }
        return true;
      },
    });
    if (saved) {
      await this.renderList();
      const sum = saved.reduce((acc, v) => acc + v.weight, 0);
      announce(`A/B test on ${channel.number}: ${saved.map((v) => `${v.label} ${shareText(v.weight, sum)}`).join(', ')}.`, 'success');
    }
  }

  // --- guardrails ---------------------------------------------------------------------------

  async openGuardrails(channel) {
    const editor = new GuardrailsEditor(channel.number);
    await editor.load();
    const error = h('p', { class: 'form-error', role: 'alert' });
    const readOnly = reasonFor('publisher', 'Changing guardrails');
    const body = h('div', {}, editor.element({ readOnly }), readOnly ? h('p', { class: 'notice' }, readOnly) : null, error);
    const choice = await openDialog({
      title: `Guardrails of ${channel.number}`, wide: true, body,
      actions: [{ label: 'Cancel', value: null }, { label: 'Save guardrails', value: 'save', kind: 'primary', disabled: Boolean(readOnly) }],
      onAction: async () => {
        clearFieldErrors(body);
        try {
          await editor.save();
          return true;
        } catch (e) {
          editor.showProblems(e);
          error.textContent = `Not saved: ${e.message}`;
          return false;
        }
      },
    });
    if (choice === 'save') announce(`Guardrails of ${channel.number} saved.`, 'success');
  }

  // --- dry run ------------------------------------------------------------------------------

  dryRun() {
    const to = field('Number called', h('input', { type: 'tel', id: 'dry-to', placeholder: '+14155550100', list: 'dry-to-list', autocomplete: 'off' }));
    const from = field('Caller number', h('input', { type: 'tel', id: 'dry-from', placeholder: '+15551230000', autocomplete: 'off' }));
    const options = h('datalist', { id: 'dry-to-list' });
    const result = h('div', { class: 'dry-result', 'aria-live': 'polite', id: 'dry-result' });
    const form = h('form', { class: 'card', 'aria-labelledby': 'dry-title', novalidate: true },
      h('h2', { id: 'dry-title' }, 'Dry run'),
      h('p', { class: 'muted' }, 'Which variant and version would this call get, and why? Nothing is recorded.'),
      to.row, from.row, options,
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Resolve')), result);
    queueMicrotask(async () => {
      const channels = this.channels ?? await listAll('/v1/channels').catch(() => []);
      fill(options, ...channels.map((c) => h('option', { value: c.number })));
    });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      fill(result, h('p', { class: 'muted' }, 'Resolving…'));
      try {
        const answer = await api('GET', '/v1/resolve' + query({ to: to.input.value.trim(), from: from.input.value.trim() }));
        fill(result, renderResolution(answer, this.catalogue));
        result.scrollIntoView({ block: 'nearest' });
      } catch (e) {
        fill(result, h('p', { class: 'form-error' }, e.message));
        result.scrollIntoView({ block: 'nearest' });
      }
    });
    return form;
  }
}

/** A small horizontal bar for a share in [0, 1] (CSSOM width: allowed by the CSP). */
function weightBar(share) {
  const bar = h('span', { class: 'fill' });
  bar.style.width = `${Math.round(share * 100)}%`;
  return h('span', { class: 'weight-bar', 'aria-hidden': 'true' }, bar);
}

/** A weight's share of `total` as a percentage with at most one decimal: "75%", "33.3%". */
function shareText(weight, total) {
  return `${Math.round((1000 * weight) / total) / 10}%`;
}

/** Pinning to the draft serves every later edit at once: ask before doing it to a number. */
async function confirmDraftPin(number) {
  const choice = await openDialog({
    title: `Pin ${number} to the draft?`,
    body: h('p', {}, `Calls to ${number} will get the agent's live draft: every saved edit reaches callers at once, without a review or a version to roll back to. Pin a published version unless this number is for testing.`),
    actions: [{ label: 'Cancel', value: null }, { label: 'Pin to the draft', value: 'draft', kind: 'danger' }],
  });
  return choice === 'draft';
}

// How GET /v1/resolve says the variant was chosen (`rule`), in words.
const RULES = {
  draw: 'a fresh draw on the caller (or call) hash',
  remembered: "the caller's remembered variant, which still has weight",
  redraw: "a fresh draw: the caller's remembered variant has no weight any more",
};

function renderResolution(answer, catalogue) {
  if (answer.rule === 'fallback') {
    return h('p', { class: 'resolution' }, 'Fallback answer: ', h('strong', {}, answer.reason.replaceAll('_', ' ')));
  }
  const shown = new Set(['variant', 'agent_id', 'version', 'rule']);
  const rest = Object.entries(answer).filter(([k]) => !shown.has(k));
  return h('div', {},
    h('p', { class: 'resolution' }, 'Variant ', h('strong', {}, answer.variant), ' → ',
      h('strong', {}, catalogue.name(answer.agent_id)), ' ', h('strong', {}, versionLabel(answer.version))),
    h('p', {}, h('span', { class: 'muted' }, 'Why: '), RULES[answer.rule] ?? answer.rule),
    h('dl', { class: 'meta' }, rest.map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))])));
}

export async function render(main) {
  await new ChannelsPage(main).render();
}
