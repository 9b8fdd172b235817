// The agents list and the "new agent" form.

import { api, query } from './api.js';
import {
  announce, clearFieldErrors, field, fill, h, showFieldError, time, versionLabel,
} from './dom.js';
import { guardedButton } from './widgets.js';

export async function render(main) {
  fill(main, h('h1', { tabindex: '-1' }, 'Agents'), h('p', { class: 'muted' }, 'Loading…'));
  const list = h('section', { 'aria-labelledby': 'agents-list-title' });
  const create = createForm();
  fill(main,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Agents')),
    h('div', { class: 'columns' }, list, create),
  );
  await renderList(list);
}

async function renderList(section, cursor = null, rows = []) {
  const data = await api('GET', '/v1/agents' + query({ cursor }));
  rows.push(...data.items);
  const body = rows.length
    ? rows.map((agent) => h('tr', {},
      h('td', {}, h('a', { href: `#/agents/${encodeURIComponent(agent.id)}` }, agent.name)),
      h('td', {}, agent.latest_version ? versionLabel(agent.latest_version) : h('span', { class: 'muted' }, 'none yet')),
      h('td', {}, `revision ${agent.draft.revision}`),
      h('td', {}, time(agent.draft.updated_at), h('span', { class: 'muted' }, ` by ${agent.draft.updated_by}`)),
      h('td', {}, h('code', {}, agent.id))))
    : h('tr', {}, h('td', { colspan: '5', class: 'muted' }, 'No agents yet. Create one with the form.'));
  const table = h('table', { class: 'table' },
    h('caption', { id: 'agents-list-title' }, `${rows.length} agent${rows.length === 1 ? '' : 's'}`),
    h('thead', {}, h('tr', {}, ['Name', 'Latest version', 'Draft', 'Updated', 'Id'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, body));
  const more = data.next_cursor
    ? h('button', { type: 'button', onclick: () => renderList(section, data.next_cursor, rows) }, 'Load more')
    : null;
  fill(section, table, more);
}

const DEFAULTS = { llmProvider: 'openai', llmModel: 'gpt-4o-mini', ttsProvider: 'elevenlabs', ttsVoice: 'rachel' };

function createForm() {
  const name = field('Name', h('input', { type: 'text', name: 'name', autocomplete: 'off', required: true }));
  const prompt = field('System prompt', h('textarea', { name: 'system_prompt', rows: '5', required: true }));
  const provider = field('LLM provider', h('input', { type: 'text', value: DEFAULTS.llmProvider }));
  const model = field('LLM model', h('input', { type: 'text', value: DEFAULTS.llmModel }));
  const tts = field('TTS provider', h('input', { type: 'text', value: DEFAULTS.ttsProvider }));
  const voice = field('TTS voice', h('input', { type: 'text', value: DEFAULTS.ttsVoice }));
  const byPath = {
    name: name.input, system_prompt: prompt.input, 'llm.provider': provider.input,
    'llm.model': model.input, 'voice.tts_provider': tts.input, 'voice.tts_voice': voice.input,
  };
  const general = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'new-agent-title', novalidate: true },
    h('h2', { id: 'new-agent-title' }, 'New agent'),
    h('p', { class: 'muted' }, 'Creates the agent with this draft; edit the rest on its page.'),
    name.row, prompt.row,
    h('div', { class: 'grid-2' }, provider.row, model.row, tts.row, voice.row),
    general,
    h('div', { class: 'actions' }, guardedButton('Create agent', { needs: 'editor', what: 'Creating agents', type: 'submit', kind: 'primary' })));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    general.textContent = '';
    const config = {
      name: name.input.value,
      system_prompt: prompt.input.value,
      llm: { provider: provider.input.value, model: model.input.value },
      voice: { tts_provider: tts.input.value, tts_voice: voice.input.value },
    };
    try {
      const agent = await api('POST', '/v1/agents', { body: { config } });
      announce(`Created agent “${agent.name}”.`, 'success');
      window.location.hash = `#/agents/${encodeURIComponent(agent.id)}`;
    } catch (error) {
      const shown = error.problems.filter((p) => byPath[p.path]);
      shown.forEach((p) => showFieldError(byPath[p.path], p.message));
      const rest = error.problems.filter((p) => !byPath[p.path]).map((p) => `${p.path}: ${p.message}`);
      general.textContent = shown.length && !rest.length ? 'Fix the highlighted fields.' : [error.message, ...rest].join(' — ');
      (shown[0] ? byPath[shown[0].path] : name.input).focus();
    }
  });
  return form;
}
