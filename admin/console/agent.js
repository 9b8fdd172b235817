// One agent: the draft editor, the Publish dialog and the version history panel.

import { api, can, query, reasonFor } from './api.js';
import {
  announce, clearAnnouncement, clearFieldErrors, field, fill, h, nextId, openDialog, showFieldError, time, versionLabel,
} from './dom.js';
import { limits } from './limits.js';
import { diffView, guardedButton, lineDiff, renderLineDiff, stableJson } from './widgets.js';

// The settings most edits touch get their own controls; everything else is edited as JSON.
const FIELDS = [
  { path: 'name', label: 'Name', kind: 'text' },
  { path: 'welcome_message', label: 'Welcome message', kind: 'text', hint: 'What the agent says first. Empty: wait for the caller.' },
  { path: 'system_prompt', label: 'System prompt', kind: 'textarea' },
  { path: 'llm.provider', label: 'LLM provider', kind: 'text', group: 'LLM' },
  { path: 'llm.model', label: 'Model', kind: 'text', group: 'LLM' },
  { path: 'llm.temperature', label: 'Temperature', kind: 'float', min: 0, max: 2, step: 0.05, group: 'LLM', hint: '0 to 2' },
  { path: 'llm.max_tokens', label: 'Max tokens', kind: 'int', min: 1, step: 1, group: 'LLM' },
  { path: 'voice.tts_provider', label: 'TTS provider', kind: 'text', group: 'Voice' },
  { path: 'voice.tts_voice', label: 'TTS voice', kind: 'text', group: 'Voice' },
  { path: 'voice.stt_provider', label: 'STT provider', kind: 'text', group: 'Voice' },
  { path: 'voice.language', label: 'Language', kind: 'text', group: 'Voice', hint: 'BCP 47, e.g. en-US' },
];
const STRUCTURED_KEYS = new Set(FIELDS.map((f) => f.path.split('.')[0]));

function getPath(config, path) {
  return path.split('.').reduce((v, k) => (v && typeof v === 'object' ? v[k] : undefined), config);
}

function setPath(config, path, value) {
  const keys = path.split('.');
  let node = config;
  for (const key of keys.slice(0, -1)) {
    if (!node[key] || typeof node[key] !== 'object') node[key] = {};
    node = node[key];
  }
  if (value === undefined) delete node[keys.at(-1)];
  else node[keys.at(-1)] = value;
}

function restOf(config) {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !STRUCTURED_KEYS.has(k)));
}

/** The top-level key a validation path starts with: `tools[0].name` → `tools`. */
function topKey(path) {
  return path.split(/[.[]/)[0];
}

class AgentPage {
  constructor(main, agentId) {
    this.main = main;
    this.agentId = agentId;
    this.base = `/v1/agents/${encodeURIComponent(agentId)}`;
    this.versions = [];
    this.nextCursor = null;
    this.selected = new Set();
  }

  async load() {
    const [agent, history] = await Promise.all([
      api('GET', this.base),
      api('GET', `${this.base}/versions` + query({})),
    ]);
    this.agent = agent;
    this.draft = agent.draft;
    this.versions = history.items;
    this.nextCursor = history.next_cursor;
    this.historyDraft = history.draft;
  }

  get latest() {
    return this.versions[0] ?? null;
  }

  /** True when the saved draft differs from the latest published version. */
  get unpublished() {
    return !this.latest || this.latest.config_hash !== this.draft.config_hash;
  }

  render() {
    this.editorSection = h('section', { class: 'card editor', 'aria-labelledby': 'editor-title' });
    this.historySection = h('section', { class: 'card history', 'aria-labelledby': 'history-title' });
    this.head = h('div', { class: 'page-head' });
    fill(this.main,
      h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/agents' }, 'Agents'), ' / ', this.agent.name),
      this.head,
      h('div', { class: 'agent-layout' }, this.editorSection, this.historySection),
    );
    this.renderHead();
    this.renderEditor();
    this.renderHistory();
  }

  renderHead() {
    const links = h('span', { class: 'head-links' },
      h('a', { href: `#/calls?agent_id=${encodeURIComponent(this.agentId)}` }, 'Calls'),
      h('a', { href: `#/analytics?agent_id=${encodeURIComponent(this.agentId)}` }, 'Analytics'));
    fill(this.head,
      h('div', {},
        h('h1', { tabindex: '-1' }, this.agent.name),
        h('p', { class: 'muted' }, h('code', {}, this.agentId), ' · latest ',
          this.latest ? versionLabel(this.latest.version) : 'none', ' · draft revision ', String(this.draft.revision))),
      h('div', { class: 'actions' }, links, this.publishButton()));
  }

  publishButton() {
    const roleReason = reasonFor('publisher', 'Publishing');
    const dirtyReason = this.dirty ? 'Save or discard your edits first: publishing snapshots the saved draft.' : null;
    const reason = roleReason ?? dirtyReason;
    const button = h('button', {
      type: 'button', class: 'primary', id: 'publish-button', disabled: Boolean(reason), title: reason ?? undefined,
      onclick: () => this.openPublish(),
    }, 'Publish…');
    if (!reason) return button;
    const note = h('span', { class: 'reason', id: nextId('why') }, roleReason ? 'Needs publisher role' : 'Save edits first');
    button.setAttribute('aria-describedby', note.id);
    return h('span', { class: 'guarded' }, button, note);
  }

  // --- draft editor -------------------------------------------------------------------------

  renderEditor() {
    const config = this.draft.config;
    const readOnly = !can('editor');
    this.inputs = {};
    const groups = new Map();
    for (const spec of FIELDS) {
      const value = getPath(config, spec.path);
      let control;
      if (spec.kind === 'textarea') control = h('textarea', { rows: '8', spellcheck: 'true' });
      else if (spec.kind === 'text') control = h('input', { type: 'text', autocomplete: 'off' });
      else control = h('input', { type: 'number', min: spec.min, max: spec.max, step: spec.step, inputmode: spec.kind === 'int' ? 'numeric' : 'decimal' });
      control.value = value === undefined || value === null ? '' : String(value);
      control.dataset.path = spec.path;
      control.readOnly = readOnly;
      control.addEventListener('input', () => this.onEdit());
      this.inputs[spec.path] = control;
      const { row } = field(spec.label, control, { hint: spec.hint, id: `draft-${spec.path.replace('.', '-')}` });
      const key = spec.group ?? '';
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(row);
    }
    this.json = h('textarea', { rows: '16', class: 'code', spellcheck: 'false', id: 'draft-json', 'data-path': '$rest' });
    this.json.value = stableJson(restOf(config));
    this.json.readOnly = readOnly;
    this.json.addEventListener('input', () => this.onEdit());
    this.json.addEventListener('keydown', (event) => {
      // Tab inserts two spaces; Escape then Tab leaves the editor (keyboard users are never trapped).
      if (event.key === 'Escape') { this.json.dataset.escaped = '1'; return; }
      if (event.key === 'Tab' && !event.shiftKey && !this.json.dataset.escaped && !this.json.readOnly) {
        event.preventDefault();
        this.json.setRangeText('  ', this.json.selectionStart, this.json.selectionEnd, 'end');
        this.onEdit();
      }
      delete this.json.dataset.escaped;
    });
    const jsonField = field('Everything else (JSON)', this.json, {
      hint: 'turn_taking, background_sound, knowledge_bases, tools, call_analysis, workflow. Tab indents; press Escape then Tab to move on.',
    });
    this.inputs.$rest = this.json;

    this.banner = h('div', { class: 'banner-slot', 'aria-live': 'polite' });
    this.dirtyNote = h('span', { class: 'dirty-note', 'aria-live': 'polite' });
    const save = guardedButton('Save draft', { needs: 'editor', what: 'Editing the draft', type: 'submit', kind: 'primary', id: 'save-draft' });
    const revert = h('button', { type: 'button', id: 'revert-draft', onclick: () => this.revert(), disabled: readOnly }, 'Discard edits');
    this.form = h('form', { novalidate: true, 'aria-labelledby': 'editor-title' },
      this.banner,
      [...groups.entries()].map(([group, rows]) => group
        ? h('fieldset', {}, h('legend', {}, group), h('div', { class: 'grid-2' }, rows))
        : rows),
      jsonField.row,
      h('div', { class: 'actions sticky-actions' }, save, revert, this.dirtyNote));
    this.form.addEventListener('submit', (event) => { event.preventDefault(); this.save(); });
    fill(this.editorSection,
      h('div', { class: 'section-head' },
        h('h2', { id: 'editor-title' }, 'Draft'),
        h('span', { class: 'muted' }, `revision ${this.draft.revision} · saved `, time(this.draft.updated_at), ` by ${this.draft.updated_by}`)),
      readOnly ? h('p', { class: 'notice' }, reasonFor('editor', 'Editing the draft')) : null,
      this.form);
    this.dirty = false;
    delete this.main.dataset.unsaved;
  }

  /** The configuration the form describes; throws {input, message} for a local problem. */
  collect() {
    let rest;
    try {
      rest = JSON.parse(this.json.value || '{}');
    } catch (error) {
      throw { input: this.json, message: `Not valid JSON: ${error.message}` };
    }
    if (!rest || typeof rest !== 'object' || Array.isArray(rest)) throw { input: this.json, message: 'Must be a JSON object.' };
    const clash = Object.keys(rest).find((k) => STRUCTURED_KEYS.has(k));
    if (clash) throw { input: this.json, message: `“${clash}” is edited in the fields above; remove it here.` };
    const config = { ...rest };
    for (const spec of FIELDS) {
      const input = this.inputs[spec.path];
      if (spec.kind === 'float' || spec.kind === 'int') {
        if (input.validity.badInput) throw { input, message: 'Enter a number.' };
        if (input.value === '') continue; // empty: the platform default applies
        setPath(config, spec.path, Number(input.value));
      } else {
        setPath(config, spec.path, input.value);
      }
    }
    return config;
  }

  onEdit() {
    let dirty = true;
    try {
      dirty = stableJson(this.collect()) !== stableJson(this.draft.config);
    } catch {
      dirty = true;
    }
    if (dirty !== this.dirty) {
      this.dirty = dirty;
      if (dirty) this.main.dataset.unsaved = 'The draft has unsaved edits. Leave and lose them?';
      else delete this.main.dataset.unsaved;
      this.dirtyNote.textContent = dirty ? 'Unsaved changes' : '';
      this.renderHead();
    }
  }

  revert() {
    this.renderEditor();
    this.renderHead();
    announce('Edits discarded.');
  }

  async save({ overwrite = false } = {}) {
    clearAnnouncement();
    clearFieldErrors(this.form);
    this.banner.replaceChildren();
    let config;
    try {
      config = this.collect();
    } catch (problem) {
      if (!problem.input) throw problem;
      showFieldError(problem.input, problem.message);
      problem.input.focus();
      return;
    }
    const revision = overwrite ? this.conflictRevision : this.draft.revision;
    try {
      this.draft = await api('PUT', `${this.base}/draft`, { body: { config }, ifMatch: revision });
      this.agent.name = this.draft.config.name;
      await this.refresh();
      announce(`Draft saved (revision ${this.draft.revision}).`, 'success');
    } catch (error) {
      if (error.status === 412) await this.showConflict(config);
      else if (error.status === 422) this.showProblems(error);
      else fill(this.banner, h('div', { class: 'banner error', role: 'alert' }, error.message));
    }
  }

  showProblems(error) {
    const general = [];
    let first = null;
    for (const problem of error.problems) {
      const input = this.inputs[problem.path] ?? (STRUCTURED_KEYS.has(topKey(problem.path)) ? null : this.json);
      if (!input) { general.push(`${problem.path}: ${problem.message}`); continue; }
      const message = input === this.json ? `${problem.path}: ${problem.message}` : problem.message;
      const existing = input.closest('.field').querySelector('.field-error');
      showFieldError(input, existing ? `${existing.textContent}; ${message}` : message);
      first ??= input;
    }
    fill(this.banner, h('div', { class: 'banner error', role: 'alert' },
      h('strong', {}, 'The draft was not saved. '), 'Fix the highlighted fields.',
      general.length ? h('ul', {}, general.map((g) => h('li', {}, g))) : null));
    first?.focus();
  }

  /** 412: someone saved the draft after this page loaded it. Explain and offer the ways out. */
  async showConflict(mine) {
    const current = await api('GET', `${this.base}/draft`);
    this.conflictRevision = current.revision;
    const theirs = h('div', { hidden: true },
      renderLineDiff(lineDiff(stableJson(this.draft.config), stableJson(current.config)),
        { fromLabel: `revision ${this.draft.revision} (you started from)`, toLabel: `revision ${current.revision} (saved now)` }));
    const box = h('div', { class: 'banner warning', role: 'alert', id: 'conflict-banner' },
      h('h3', {}, 'Someone else changed this draft'),
      h('p', {}, `You opened revision ${this.draft.revision}. Since then ${current.updated_by} saved revision ${current.revision} (`,
        time(current.updated_at), '). Your edits are not saved yet: the server refused them because they would silently overwrite that change (If-Match failed).'),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: (e) => { theirs.hidden = !theirs.hidden; e.currentTarget.setAttribute('aria-expanded', String(!theirs.hidden)); }, 'aria-expanded': 'false' }, 'Show their changes'),
        h('button', { type: 'button', class: 'danger', onclick: () => this.save({ overwrite: true }) }, `Overwrite revision ${current.revision} with my edits`),
        h('button', { type: 'button', onclick: async () => { this.draft = current; this.renderEditor(); this.renderHead(); announce(`Loaded revision ${current.revision}; your edits were discarded.`); } }, 'Discard my edits and load theirs')),
      theirs);
    fill(this.banner, box);
    this.pendingConfig = mine;
    box.querySelector('button').focus();
  }

  async refresh() {
    await this.load();
    this.renderEditor();
    this.renderHead();
    this.renderHistory();
  }

  // --- publish ------------------------------------------------------------------------------

  async previewDiff() {
    const draft = await api('GET', `${this.base}/draft`);
    if (!this.latest) {
      return {
        draft,
        unchanged: false,
        view: h('div', { class: 'diff' },
          h('h3', {}, `Everything in draft revision ${draft.revision}`),
          h('p', {}, 'This will be V1, the first version of this agent: the whole draft is published.'),
          renderLineDiff(lineDiff('', stableJson(draft.config)), { fromLabel: '(nothing)', toLabel: `draft revision ${draft.revision}` })),
      };
    }
    const n = this.latest.version;
    const [diff, version] = await Promise.all([
      api('GET', `${this.base}/versions/${n}/diff?against=draft`),
      api('GET', `${this.base}/versions/${n}`),
    ]);
    return {
      draft,
      unchanged: draft.config_hash === version.config_hash,
      view: diffView({ summary: diff.summary, before: version.config, after: draft.config, fromLabel: `V${n}`, toLabel: `draft revision ${draft.revision}` }),
    };
  }

  async openPublish() {
    const nextNumber = (this.latest?.version ?? 0) + 1;
    const name = field('Version name', h('input', { type: 'text', required: true, maxlength: String(limits.versionNameChars), autocomplete: 'off', id: 'publish-name' }));
    const description = field('Description', h('textarea', { rows: '3', maxlength: String(limits.descriptionChars), id: 'publish-description' }), { hint: 'What changed and why; shown in the history.' });
    const diffSlot = h('div', { class: 'diff-slot' }, h('p', { class: 'muted' }, 'Loading the diff…'));
    const error = h('p', { class: 'form-error', role: 'alert' });
    // Publishing a draft identical to the latest version is refused unless asked for.
    const allowUnchanged = h('input', { type: 'checkbox', id: 'publish-unchanged' });
    const unchangedRow = h('div', { class: 'field', hidden: true },
      h('label', {}, allowUnchanged, ' ', this.latest
        ? `Publish anyway: the draft is identical to V${this.latest.version}`
        : 'Publish anyway'));
    let preview = null;
    let published = null;
    const showPreview = async () => {
      preview = await this.previewDiff();
      unchangedRow.hidden = !preview.unchanged;
      fill(diffSlot, preview.view);
    };
    const body = h('div', {},
      h('p', {}, `Snapshot draft into V${nextNumber}. The draft itself does not change, and no call uses V${nextNumber} until a channel is pinned to it.`),
      name.row, description.row, diffSlot, unchangedRow, error);
    const pending = openDialog({
      title: `Publish V${nextNumber}`, wide: true, body,
      actions: [{ label: 'Cancel', value: null }, { label: `Publish V${nextNumber}`, value: 'publish', kind: 'primary' }],
      onAction: async () => {
        clearFieldErrors(body);
        error.textContent = '';
        if (!name.input.value.trim()) {
          showFieldError(name.input, 'Give the version a name.');
          name.input.focus();
          return false;
        }
        if (!preview) return false;
        const reviewed = preview.draft.revision;
        try {
          // If-Match: the server publishes exactly the revision reviewed here, or refuses (412).
          published = await api('POST', `${this.base}/versions`, {
            body: { name: name.input.value, description: description.input.value, allow_unchanged: allowUnchanged.checked },
            ifMatch: reviewed,
          });
          return true;
        } catch (e) {
          if (e.status === 412) {
            await showPreview();
            error.textContent = `The draft changed while this dialog was open (now revision ${preview.draft.revision}, you reviewed ${reviewed}). Review the updated diff, then publish again.`;
            return false;
          }
          if (e.status === 409) {
            unchangedRow.hidden = false;
            error.textContent = e.message;
            allowUnchanged.focus();
            return false;
          }
          const byPath = { name: name.input, description: description.input };
          e.problems.forEach((p) => byPath[p.path] && showFieldError(byPath[p.path], p.message));
          error.textContent = e.message;
          return false;
        }
      },
    });
    name.input.focus();
    showPreview().catch((e) => fill(diffSlot, h('p', { class: 'form-error' }, `Could not load the diff: ${e.message}`)));
    if ((await pending) === 'publish') {
      await this.refresh();
      announce(`Published V${published.version} “${published.name}”.`, 'success');
    }
  }

  // --- history ------------------------------------------------------------------------------

  /** How the draft relates to the versions: same as one of them, or unpublished. */
  draftBadge() {
    if (!this.latest) return h('span', { class: 'badge warn' }, 'never published');
    const same = this.versions.find((v) => v.config_hash === this.draft.config_hash);
    if (same) return h('span', { class: 'badge' }, `same as V${same.version}`);
    return h('span', { class: 'badge warn' }, 'unpublished changes');
  }

  renderHistory() {
    const compareButton = h('button', { type: 'button', id: 'compare-selected', disabled: this.selected.size !== 2, onclick: () => this.compareSelected() }, 'Compare selected');
    const selectHint = h('p', { class: 'hint', id: 'compare-hint' }, 'Tick any two entries to compare them.');
    compareButton.setAttribute('aria-describedby', selectHint.id);
    const pick = (key, label) => {
      const box = h('input', { type: 'checkbox', checked: this.selected.has(key), 'aria-label': `Select ${label} for comparison` });
      box.addEventListener('change', () => {
        if (box.checked) this.selected.add(key); else this.selected.delete(key);
        compareButton.disabled = this.selected.size !== 2;
      });
      return box;
    };
    const draftItem = h('li', { class: 'history-item draft-item' },
      pick('draft', 'the draft'),
      h('div', { class: 'history-main' },
        h('div', { class: 'history-title' }, h('strong', {}, 'Draft'),
          this.draftBadge()),
        h('div', { class: 'muted' }, `revision ${this.draft.revision} · ${this.draft.updated_by} · `, time(this.draft.updated_at))));
    const items = this.versions.map((v) => h('li', { class: 'history-item', dataset: { version: String(v.version) } },
      pick(v.version, `V${v.version}`),
      h('div', { class: 'history-main' },
        h('div', { class: 'history-title' }, h('strong', {}, `V${v.version}`), ' ', h('span', {}, v.name)),
        v.description ? h('p', { class: 'history-desc' }, v.description) : null,
        h('div', { class: 'muted' }, `${v.author} · `, time(v.published_at)),
        h('div', { class: 'history-actions' },
          h('button', { type: 'button', class: 'small', onclick: () => this.openVersion(v.version), 'aria-label': `Open V${v.version}` }, 'Open'),
          h('button', { type: 'button', class: 'small', onclick: () => this.compare(v.version, 'draft'), 'aria-label': `Compare V${v.version} with the draft` }, 'Diff vs draft'),
          guardedButton('Restore', {
            needs: 'publisher', what: 'Restoring', kind: 'small', ariaLabel: `Restore V${v.version} into the draft`,
            onclick: () => this.confirmRestore(v.version),
          })))));
    const more = this.nextCursor ? h('button', { type: 'button', onclick: () => this.loadOlder() }, 'Load older versions') : null;
    fill(this.historySection,
      h('div', { class: 'section-head' }, h('h2', { id: 'history-title' }, 'History'), compareButton),
      selectHint,
      h('ol', { class: 'history-list', 'aria-label': 'Draft, then versions newest first' }, draftItem, items),
      this.versions.length ? null : h('p', { class: 'muted' }, 'No versions yet: publish the draft to make V1.'),
      more);
  }

  async loadOlder() {
    const page = await api('GET', `${this.base}/versions` + query({ cursor: this.nextCursor }));
    this.versions.push(...page.items);
    this.nextCursor = page.next_cursor;
    this.renderHistory();
  }

  async configOf(key) {
    if (key === 'draft') return (await api('GET', `${this.base}/draft`)).config;
    return (await api('GET', `${this.base}/versions/${key}`)).config;
  }

  compareSelected() {
    const [a, b] = [...this.selected].sort((x, y) => (x === 'draft' ? 1 : y === 'draft' ? -1 : x - y));
    return this.compare(a, b);
  }

  /** Diff version `from` (a number) against `to` (a later number or 'draft'). */
  async compare(from, to) {
    const label = (k) => (k === 'draft' ? 'Draft' : `V${k}`);
    const [diff, before, after] = await Promise.all([
      api('GET', `${this.base}/versions/${from}/diff?against=${to}`),
      this.configOf(from),
      this.configOf(to),
    ]);
    await openDialog({
      title: `Compare ${label(from)} → ${label(to)}`, wide: true,
      body: diffView({ summary: diff.summary, before, after, fromLabel: label(from), toLabel: label(to) }),
      actions: [{ label: 'Close', value: null }],
    });
  }

  async openVersion(n) {
    const v = await api('GET', `${this.base}/versions/${n}`);
    const restore = guardedButton('Restore into draft…', { needs: 'publisher', what: 'Restoring', onclick: () => { dialogDone(); this.confirmRestore(n); } });
    let dialogDone = () => {};
    const body = h('div', {},
      h('dl', { class: 'meta' },
        h('dt', {}, 'Name'), h('dd', {}, v.name),
        h('dt', {}, 'Description'), h('dd', {}, v.description || '—'),
        h('dt', {}, 'Author'), h('dd', {}, v.author),
        h('dt', {}, 'Published'), h('dd', {}, time(v.published_at)),
        h('dt', {}, 'Config hash'), h('dd', {}, h('code', {}, v.config_hash))),
      h('div', { class: 'actions' }, restore),
      h('pre', { class: 'code-view', tabindex: '0', 'aria-label': `V${n} configuration` }, stableJson(v.config)));
    const pending = openDialog({ title: `V${n} — ${v.name}`, wide: true, body, actions: [{ label: 'Close', value: null }] });
    dialogDone = () => body.closest('dialog')?.querySelector('.dialog-actions button')?.click();
    await pending;
  }

  async confirmRestore(n) {
    const current = await api('GET', `${this.base}/draft`);
    const unpublished = !this.latest || this.latest.config_hash !== current.config_hash;
    const warnings = [
      h('p', {}, `Restoring overwrites the draft with V${n}'s configuration (draft revision ${current.revision} → ${current.revision + 1}). It does not create a version; channels serving the draft start serving it at once.`),
      unpublished
        ? h('p', { class: 'banner warning' }, h('strong', {}, 'Unpublished draft changes will be lost. '),
          `The draft (revision ${current.revision}) differs from ${this.latest ? `V${this.latest.version}` : 'every version'}. Publish it first if you want to keep it.`)
        : h('p', { class: 'muted' }, `The draft matches V${this.latest.version}, so nothing unpublished is lost.`),
      this.dirty ? h('p', { class: 'banner warning' }, 'Your unsaved edits in the editor will be discarded too.') : null,
    ];
    const actions = [{ label: 'Cancel', value: null }];
    if (unpublished && can('publisher')) actions.push({ label: 'Publish the draft first…', value: 'publish-first' });
    actions.push({ label: `Restore V${n}`, value: 'restore', kind: 'danger' });
    const choice = await openDialog({ title: `Restore V${n} into the draft?`, body: h('div', {}, warnings), actions });
    if (choice === 'publish-first') {
      await this.openPublish();
      return;
    }
    if (choice !== 'restore') return;
    try {
      const draft = await api('POST', `${this.base}/versions/${n}/restore`);
      await this.refresh();
      announce(`Restored V${n} into the draft (revision ${draft.revision}).`, 'success');
    } catch (error) {
      announce(`Restore failed: ${error.message}`, 'error');
    }
  }
}

export async function render(main, params) {
  const page = new AgentPage(main, params.id);
  await page.load();
  page.render();
}
