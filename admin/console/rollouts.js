// Progressive rollouts of a channel: start one (target, steps, hold, guardrails), watch its
// progress (step bar, calls per side, guardrail status), pause, resume, abort or promote it.

import { api, reasonFor } from './api.js';
import { agentVersionPair, channelPath, GuardrailsEditor } from './channels.js';
import { announce, clearFieldErrors, field, h, openDialog, showFieldError, time } from './dom.js';
import { parseVersionValue } from './widgets.js';

const ACTIONS = [
  ['pause', 'Pause', ['running']],
  ['resume', 'Resume', ['paused']],
  ['promote', 'Promote to 100%', ['running', 'paused']],
  ['abort', 'Abort', ['running', 'paused']],
];

/** The rollout dialog of a channel: the one in progress, else a form to start one. */
export async function openRollout(channel, catalogue) {
  await catalogue.load();
  const path = `${channelPath(channel.number)}/rollouts`;
  const { current, items } = await api('GET', path);
  if (current) return watch(channel, path, current);
  return start(channel, path, catalogue, items[0]);
}

/** One segment per step, the ones reached filled. */
function stepBar(rollout) {
  return h('ol', { class: 'step-bar', 'aria-label': 'Rollout steps' }, rollout.steps.map((share, i) =>
    h('li', { class: i <= rollout.step ? 'reached' : '', 'aria-current': i === rollout.step ? 'step' : undefined }, `${share}%`)));
}

function progressView(rollout) {
  const p = rollout.progress;
  return h('div', { class: 'rollout-progress' },
    h('p', {}, h('strong', {}, `Step ${rollout.step + 1} of ${rollout.steps.length}: ${rollout.share}% on ${rollout.target.label}`), ` — ${rollout.state}`,
      rollout.reason ? h('span', { class: 'muted' }, ` (${rollout.reason})`) : null),
    stepBar(rollout),
    h('dl', { class: 'meta' },
      h('dt', {}, 'Target calls'), h('dd', {}, `${p.target.calls} (${p.target.analysed} analysed)`),
      h('dt', {}, 'Starting routing calls'), h('dd', {}, `${p.baseline.calls} (${p.baseline.analysed} analysed)`),
      h('dt', {}, 'This step'), h('dd', {}, `${p.step_analysed} analysed, ${p.calls_needed} more needed; held until `, time(rollout.hold_until))),
    h('ul', { class: 'guardrail-status', 'aria-label': 'Guardrail status' }, p.guardrails.length
      ? p.guardrails.map((g) => h('li', { class: g.breached ? 'bad' : 'ok' }, `${g.metric} ${g.op} ${g.threshold}: ${g.breached ? 'broken' : 'holding'}`))
      : h('li', { class: 'muted' }, 'No guardrails')));
}

async function watch(channel, path, rollout) {
  const readOnly = reasonFor('publisher', 'Changing a rollout');
  const error = h('p', { class: 'form-error', role: 'alert' });
  const choice = await openDialog({
    title: `Rollout on ${channel.number}`, wide: true,
    body: h('div', {}, progressView(rollout), readOnly ? h('p', { class: 'notice' }, readOnly) : null, error),
    actions: [{ label: 'Close', value: null }, ...ACTIONS.filter(([, , states]) => states.includes(rollout.state))
      .map(([value, label]) => ({ label, value, kind: value === 'abort' ? 'danger' : '', disabled: Boolean(readOnly) }))],
    onAction: async (action) => {
      try {
        await api('POST', `${path}/${rollout.id}/${action}`);
        return true;
      } catch (e) {
        error.textContent = `Not done: ${e.message}`;
        return false;
      }
    },
  });
  if (choice) announce(`Rollout on ${channel.number}: ${choice} done.`, 'success');
}

async function start(channel, path, catalogue, last) {
  const first = channel.variants[0];
  const pair = await agentVersionPair(catalogue, first?.agent_id ?? '', null, { idPrefix: 'rollout', labelPrefix: 'Target ' });
  const steps = field('Steps (percent of calls, ending at 100)', h('input', { type: 'text', id: 'rollout-steps', value: '5, 25, 50, 100' }));
  const hold = field('Hold each step (minutes)', h('input', { type: 'number', id: 'rollout-hold', min: '0', step: '1', value: '60', class: 'short' }));
  const minCalls = field('Analysed calls each step waits for', h('input', { type: 'number', id: 'rollout-min-calls', min: '0', step: '1', value: '30', class: 'short' }));
  const rules = new GuardrailsEditor(channel.number);
  const error = h('div', { class: 'form-error', role: 'alert' });
  const body = h('div', {},
    h('p', {}, `Move ${channel.number}'s calls onto a target step by step. A broken guardrail sends every call back to the current routing at once.`),
    last ? h('p', { class: 'muted' }, `Last rollout: ${last.state}${last.reason ? ` (${last.reason})` : ''}.`) : null,
    pair.agentRow, pair.versionRow, steps.row, hold.row, minCalls.row,
    rules.element({ hint: 'The target is rolled back when it confidently breaks a rule, once it has the minimum number of calls.' }),
    error);
  const inputs = { 'target.agent_id': pair.agent, 'target.version': () => pair.version, steps: steps.input, hold_s: hold.input, min_calls: minCalls.input };
  const started = await openDialog({
    title: `Start a rollout on ${channel.number}`, wide: true, body,
    actions: [{ label: 'Cancel', value: null }, { label: 'Start rollout', value: 'start', kind: 'primary', disabled: Boolean(reasonFor('publisher', 'Starting a rollout')) }],
    onAction: async () => {
      clearFieldErrors(body);
      error.replaceChildren();
      const request = {
        target: { agent_id: pair.agent.value, version: parseVersionValue(pair.version.value) },
        steps: steps.input.value.split(',').map((v) => Number(v.trim())),
        hold_s: Math.round(Number(hold.input.value) * 60),
        min_calls: Number(minCalls.input.value),
        rules: rules.collect(),
      };
      try {
        await api('POST', path, { body: request });
        return true;
      } catch (e) {
        for (const p of e.problems) {
          const key = p.path.replace(/\[\d+\]$/, '');
          const input = typeof inputs[key] === 'function' ? inputs[key]() : inputs[key];
          if (input) showFieldError(input, p.message);
        }
        rules.showProblems(e);
        error.textContent = `Not started: ${e.message}${e.problems.length ? ` — ${e.problems.map((p) => `${p.path}: ${p.message}`).join('; ')}` : ''}`;
        return false;
      }
    },
  });
  if (started) announce(`Rollout on ${channel.number} started.`, 'success');
}
