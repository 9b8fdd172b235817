// Small DOM helpers: element builders, field errors, dialogs, status messages.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'indeterminate']);
const SVG_NS = 'http://www.w3.org/2000/svg';
let uid = 0;

/** A fresh id for label/aria wiring. */
export function nextId(prefix = 'id') {
  uid += 1;
  return `${prefix}-${uid}`;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

function build(el, props, children) {
  const late = [];
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) late.push([key, value]);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  // Properties after children, so a <select>'s value finds its options.
  for (const [key, value] of late) el[key] = value;
  return el;
}

/** An HTML element: h('button', {type: 'button', onclick}, 'Save'). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** Replace an element's children; arrays are flattened and null/false skipped, as in h(). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form control: returns {row, input}; `control` is an element or a tag name. */
export function field(labelText, control, { hint, id } = {}) {
  const input = typeof control === 'string' ? h(control) : control;
  input.id = input.id || id || nextId('f');
  const hintEl = hint ? h('p', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  const row = h('div', { class: 'field' }, h('label', { for: input.id }, labelText), input, hintEl);
  return { row, input };
}

/** Show `message` under a control and mark it invalid (announced with the control). */
export function showFieldError(input, message) {
  const row = input.closest('.field') ?? input.parentElement;
  let note = row.querySelector(':scope > .field-error');
  if (!note) {
    note = h('p', { class: 'field-error', id: `${input.id}-error` });
    row.append(note);
  }
  note.textContent = message;
  input.setAttribute('aria-invalid', 'true');
  const described = new Set((input.getAttribute('aria-describedby') ?? '').split(' ').filter(Boolean));
  described.add(note.id);
  input.setAttribute('aria-describedby', [...described].join(' '));
  // The message goes as soon as the user starts fixing the field.
  input.addEventListener('input', () => clearFieldError(input, note), { once: true });
  input.addEventListener('change', () => clearFieldError(input, note), { once: true });
}

function clearFieldError(input, note) {
  if (!note.isConnected) return;
  input.removeAttribute('aria-invalid');
  const rest = (input.getAttribute('aria-describedby') ?? '').split(' ').filter((x) => x && x !== note.id);
  if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
  else input.removeAttribute('aria-describedby');
  note.remove();
}

export function clearFieldErrors(root) {
  for (const note of root.querySelectorAll('.field-error')) {
    const input = root.querySelector(`[aria-describedby~="${note.id}"]`);
    if (input) clearFieldError(input, note);
    else note.remove();
  }
}

export function clearAnnouncement() {
  clearTimeout(announce.timer);
  document.getElementById('status').replaceChildren();
}

/** A one-line message in the polite live region at the top of the page. */
export function announce(message, kind = 'info') {
  const status = document.getElementById('status');
  fill(status, h('p', { class: `toast ${kind}` }, message));
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => status.replaceChildren(), 6000);
}

/**
 * A modal dialog. `actions` are [{label, value, kind, disabled}]; resolves with the chosen
 * value, or null when dismissed (Escape or Cancel). `onAction(value, dialog)` may return false
 * to keep the dialog open (e.g. after showing an error).
 */
export function openDialog({ title, body, actions, onAction, wide = false }) {
  return new Promise((resolve) => {
    const titleId = nextId('dlg');
    const buttons = actions.map((a) =>
      h('button', {
        type: 'button', class: a.kind ?? '', disabled: a.disabled, dataset: { value: a.value ?? '' },
        onclick: async (event) => {
          if (a.value === null || a.value === undefined) return done(null);
          const button = event.currentTarget;
          button.disabled = true;
          try {
            if (onAction && (await onAction(a.value, dialog)) === false) return;
          } finally {
            button.disabled = false;
          }
          done(a.value);
        },
      }, a.label));
    const dialog = h('dialog', { class: wide ? 'wide' : '', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title),
      h('div', { class: 'dialog-body' }, body),
      h('div', { class: 'dialog-actions' }, buttons));
    function done(value) {
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(value);
    }
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      done(null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function formatDate(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
}

/** `V3` for a version number; `Draft` for null or "draft" (how APIs name the draft). */
export function versionLabel(version) {
  return version === null || version === undefined || version === 'draft' ? 'Draft' : `V${version}`;
}

/** A <time> element with the full timestamp as its machine value and tooltip. */
export function time(iso) {
  return h('time', { datetime: iso ?? '', title: iso ?? '' }, formatDate(iso));
}
