// Small form helpers for the setup pages: fields described as data, values converted to and
// from the API's units (mA, ms), and the API's validation errors shown at their field.

import { t } from './texts.js';

// Units: the page shows A and s where the API takes mA and ms.
const UNITS = {
  amps: { show: (v) => (v === undefined || v === null ? '' : Number(v) / 1000), read: (s) => Math.round(Number(s) * 1000) },
  seconds_ms: { show: (v) => (v === undefined ? '' : Number(v) / 1000), read: (s) => Math.round(Number(s) * 1000) },
  int: { show: (v) => v ?? '', read: (s) => Math.round(Number(s)) },
  number: { show: (v) => v ?? '', read: (s) => Number(s) },
};

export function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// One field: {path, label, type: text|amps|seconds_ms|int|number|check|select|expr_amps,
// options: [[value, text]], min, max, step, hint}. Returns the <label> with .read().
export function field(spec, value) {
  const label = t(spec.label);
  let input;
  if (spec.type === 'check') {
    input = element('input', { type: 'checkbox', checked: Boolean(value) });
  } else if (spec.type === 'select') {
    input = element('select');
    for (const [v, text] of spec.options) {
      input.append(element('option', { value: String(v), selected: String(v) === String(value) }, text));
    }
  } else if (spec.type === 'text' || spec.type === 'expr_amps' || spec.type === 'time') {
    const shown = spec.type === 'expr_amps' && typeof value === 'number' ? value / 1000 : value ?? '';
    input = element('input', { type: spec.type === 'time' ? 'time' : 'text', value: String(shown) });
    if (spec.maxlength) input.maxLength = spec.maxlength;
  } else {
    input = element('input', { type: 'number', value: String(UNITS[spec.type].show(value)) });
    input.step = spec.step ?? (spec.type === 'int' ? '1' : 'any');
    if (spec.min !== undefined) input.min = spec.min;
    if (spec.max !== undefined) input.max = spec.max;
    input.inputMode = 'decimal';
  }
  input.name = spec.path;
  input.dataset.path = spec.path;
  if (spec.type === 'amps' || spec.type === 'expr_amps') input.dataset.unit = 'amps';
  if (spec.readonly) input.disabled = true;
  const error = element('span', { className: 'field-error', role: 'alert' });
  error.dataset.errorFor = spec.path;
  const wrapper = element(
    'label',
    { className: spec.type === 'check' ? 'field check' : 'field' },
    ...(spec.type === 'check' ? [input, element('span', {}, label)] : [element('span', {}, label), input]),
    spec.hint ? element('span', { className: 'hint' }, t(spec.hint)) : null,
    error,
  );
  wrapper.read = () => readInput(spec, input);
  wrapper.spec = spec;
  return wrapper;
}

function readInput(spec, input) {
  if (spec.type === 'check') return input.checked;
  if (spec.type === 'select') {
    const raw = input.value;
    return spec.numeric === false ? raw : Number(raw);
  }
  if (spec.type === 'text' || spec.type === 'time') return input.value;
  if (spec.type === 'expr_amps') {
    // A number is amperes; anything else is an expression over the variables, in mA.
    const raw = input.value.trim();
    return raw !== '' && !Number.isNaN(Number(raw)) ? Math.round(Number(raw) * 1000) : raw;
  }
  if (input.value.trim() === '') return undefined;
  return UNITS[spec.type].read(input.value);
}

// Reads fields into an object (keys = their paths); skips read-only ones and empty numbers.
export function readFields(fields) {
  const out = {};
  for (const f of fields) {
    if (f.spec.readonly) continue;
    const value = f.read();
    if (value !== undefined) out[f.spec.path] = value;
  }
  return out;
}

// "devices[0].max_charging_cur.constrained-int: Input should be …; user.rfids.0.id: …"
// → [{path: ['max_charging_cur', 'constrained-int'], message}], the request's own prefix
// (params., devices[0]., user.) dropped and [n] written as .n.
export function parseErrors(message) {
  const out = [];
  for (const part of message.split('; ')) {
    const match = /^([A-Za-z0-9_.\[\]-]+): (.*)$/s.exec(part);
    if (!match) {
      out.push({ path: [], message: part });
      continue;
    }
    const path = match[1]
      .replace(/\[(\d+)\]/g, '.$1')
      .split('.')
      .filter(Boolean);
    while (path.length && ['params', 'user', 'devices', 'body'].includes(path[0])) {
      path.shift();
      if (path.length && /^\d+$/.test(path[0])) path.shift();
    }
    out.push({ path, message: match[2] });
  }
  return out;
}

// Shows an API error at the fields it names (the longest path that matches an input in
// `root`); what matches none goes to `fallback`. Returns how many were placed at a field.
export function showErrors(root, message, fallback) {
  for (const el of root.querySelectorAll('[data-error-for]')) el.textContent = '';
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  let placed = 0;
  const loose = [];
  const seen = new Set();
  for (const { path, message: text } of parseErrors(message)) {
    let target = null;
    for (let n = path.length; n > 0 && !target; n--) {
      const key = path.slice(0, n).join('.');
      target = root.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
      if (target && seen.has(key)) {
        target = 'done';
      } else if (target) {
        seen.add(key);
      }
    }
    if (target === 'done') continue;
    if (target) {
      const input = root.querySelector(`[data-path="${CSS.escape(target.dataset.errorFor)}"]`);
      // The API counts mA where this field shows A: say both.
      target.textContent = input?.dataset.unit === 'amps'
        ? text.replace(/\b(\d{4,})\b/g, (n) => `${Number(n) / 1000} A (${n} mA)`)
        : text;
      input?.setAttribute('aria-invalid', 'true');
      placed += 1;
    } else {
      loose.push(path.length ? `${path.join('.')}: ${text}` : text);
    }
  }
  if (loose.length && fallback) {
    fallback.textContent = t('setup.failed', { error: loose.join('; ') });
    fallback.classList.add('failed');
  }
  const first = root.querySelector('[aria-invalid=true]');
  first?.focus();
  return placed;
}

export function clearErrors(root) {
  for (const el of root.querySelectorAll('[data-error-for]')) el.textContent = '';
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}
