// The setup pages: the installation's parameters, devices, groups, users with their RFIDs,
// and charging rules (of an EVSE and of a user). Everything goes through /cnf with the
// admin's password; the API's validation errors are shown at their field.

import { t } from './texts.js';
import { cnf, getJson, isAdmin, login } from './api.js';
import { clearErrors, element, field, readFields, showErrors } from './forms.js';

const $ = (id) => document.getElementById(id);
let types = null;

const ROTATIONS = ['L1 L2 L3', 'L2 L3 L1', 'L3 L1 L2', 'L1 L3 L2', 'L2 L1 L3', 'L3 L2 L1'];
const PHASE_MASKS = [[0, 'f.used_phases.0'], [1, 'L1'], [2, 'L2'], [4, 'L3'], [3, 'L1 L2'], [5, 'L1 L3'], [6, 'L2 L3'], [7, 'L1 L2 L3']];
const QUANTITIES = ['power_w', 'import_wh', 'export_wh', 'current_l1', 'current_l2', 'current_l3', 'voltage_l1', 'voltage_l2', 'voltage_l3'];
const REGISTER_KINDS = ['u16', 'i16', 'u32', 'i32', 'u64', 'i64', 'f32'];

function status(text, failed = false) {
  const el = $('setup-status');
  el.textContent = text;
  el.classList.toggle('failed', failed);
}

export async function showSetup(tab) {
  for (const link of document.querySelectorAll('#setup-tabs a')) {
    if (link.dataset.tab === tab) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const body = $('setup-body');
  const gate = $('setup-login');
  status('');
  if (!isAdmin()) {
    gate.hidden = false;
    gate.querySelector('button').onclick = () => login();
    body.replaceChildren();
    return;
  }
  gate.hidden = true;
  try {
    types ??= await getJson('/ui/device-types');
    const pages = { params: paramsPage, devices: devicesPage, groups: groupsPage, users: usersPage };
    body.replaceChildren(await (pages[tab] || paramsPage)());
  } catch (error) {
    status(t('setup.failed', { error: error.message }), true);
  }
}

// Saves through /cnf; on an error shows it at its fields (and the rest above the form).
async function save(form, cmd, body, after) {
  clearErrors(form);
  status('');
  try {
    await cnf(cmd, { body });
  } catch (error) {
    if (!showErrors(form, error.message, $('setup-status')) && !$('setup-status').textContent) {
      status(t('setup.failed', { error: error.message }), true);
    }
    return false;
  }
  if (after) await after();
  status(t('setup.saved'));
  return true;
}

// After rows were removed, the others' field paths (charging_rules.3.time) are renumbered to
// the positions they are sent at, so that the API's errors find their field.
function renumber(row, prefix, index) {
  const pattern = new RegExp(`^${prefix.replace('.', '\\.')}\\.\\d+`);
  for (const el of row.querySelectorAll('[data-path], [data-error-for]')) {
    if (el.dataset.path) el.dataset.path = el.dataset.path.replace(pattern, `${prefix}.${index}`);
    if (el.dataset.errorFor) el.dataset.errorFor = el.dataset.errorFor.replace(pattern, `${prefix}.${index}`);
  }
}

function readRows(rows, prefix) {
  return rows.filter((r) => !r.removed).map((r, index) => {
    renumber(r.row, prefix, index);
    return r.read();
  });
}

function buttons(...items) {
  return element('div', { className: 'buttons' }, ...items);
}

// -- installation ------------------------------------------------------------------------

const PARAM_FIELDS = [
  { path: 'title', label: 'f.title', type: 'text' },
  { path: 'max_total_current', label: 'f.max_total_current', type: 'amps', min: 0 },
  { path: 'reserve_current', label: 'f.reserve_current', type: 'amps', min: 0 },
  { path: 'max_total_evse_current', label: 'f.max_total_evse_current', type: 'amps', min: 0 },
  { path: 'cycle_time', label: 'f.cycle_time', type: 'seconds_ms', min: 0.1 },
  { path: 'lb_enabled', label: 'f.lb_enabled', type: 'check' },
  {
    path: 'disable_policy', label: 'f.disable_policy', type: 'select',
    options: [0, 1, -1].map((v) => [v, t(`f.disable_policy.${v}`)]),
  },
  { path: 'min_pause_time', label: 'f.min_pause_time', type: 'int', min: 0 },
  { path: 'max_imbalance', label: 'f.max_imbalance', type: 'amps', min: 0 },
  { path: 'grid_fail_current', label: 'f.grid_fail_current', type: 'amps', min: 0 },
  { path: 'stale_time', label: 'f.stale_time', type: 'int', min: 0 },
  { path: 'overdraft_cur', label: 'f.overdraft_cur', type: 'amps', min: 0 },
];
const CONTROL_FIELDS = [
  { path: 'follow_time', label: 'f.follow_time', type: 'int', min: 1 },
  { path: 'settle_time', label: 'f.settle_time', type: 'int', min: 0 },
  { path: 'ramp_step', label: 'f.ramp_step', type: 'amps', min: 0 },
  { path: 'deadband', label: 'f.deadband', type: 'amps', min: 0 },
  { path: 'resume_margin', label: 'f.resume_margin', type: 'amps', min: 0 },
  { path: 'resume_time', label: 'f.resume_time', type: 'int', min: 0 },
  { path: 'load_hold_time', label: 'f.load_hold_time', type: 'int', min: 0 },
];

async function paramsPage() {
  const answer = await cnf('get_params');
  // get_params answers the params flat at the top level (docs/api.md).
  const params = answer;
  const fields = PARAM_FIELDS.map((spec) => field(spec, params[spec.path]));
  const control = CONTROL_FIELDS.map((spec) => field(spec, params[spec.path]));
  const form = element('form', { className: 'form', dataset: { form: 'params' } }, ...fields);
  form.append(element('fieldset', {}, element('legend', {}, t('f.advanced')), ...control));
  form.append(buttons(element('button', { type: 'submit' }, t('setup.save'))));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    save(form, 'set_params', { params: readFields([...fields, ...control]) });
  });
  return form;
}

// -- devices -----------------------------------------------------------------------------

async function devicesPage() {
  const [devices, answer, users] = await Promise.all([
    cnf('get_devices'), cnf('get_params'), cnf('get_users'),
  ]);
  const page = element('div');
  const list = element('div', { className: 'list' });
  if (!devices.length) list.append(element('p', { className: 'muted' }, t('setup.no_devices')));
  for (const device of devices) {
    const type = types[device.dev_type];
    const edit = element('button', { type: 'button' }, t('setup.edit'));
    const remove = element('button', { type: 'button', className: 'danger' }, t('setup.delete'));
    const item = element(
      'div', { className: 'card list-item', dataset: { dev: device.dev_id } },
      element('span', {}, element('strong', {}, device.name || device.dev_id), ` ${device.dev_id} · ${type ? type.display_name : device.dev_type}`),
      buttons(edit, remove),
    );
    edit.addEventListener('click', () => openDevice(page, device, answer.groups, users));
    remove.addEventListener('click', async () => {
      if (!confirm(t('setup.confirm_delete', { what: device.name || device.dev_id }))) return;
      try {
        await cnf('del_device', { params: { dev_id: device.dev_id } });
        await showSetup('devices');
        status(t('setup.deleted', { what: device.dev_id }));
      } catch (error) {
        status(t('setup.failed', { error: error.message }), true);
      }
    });
    list.append(item);
  }
  const typeSelect = element('select', { name: 'dev_type' });
  for (const [name, type] of Object.entries(types)) {
    typeSelect.append(element('option', { value: name }, `${type.display_name} — ${t(`setup.kind.${type.kind}`)} (${name})`));
  }
  const add = element('button', { type: 'button' }, t('setup.add'));
  add.addEventListener('click', () => openDevice(page, { dev_type: typeSelect.value }, answer.groups, users, true));
  page.append(
    list,
    element('div', { className: 'card row', dataset: { form: 'add-device' } },
      element('label', {}, element('span', {}, t('setup.add_device')), typeSelect), add),
    element('div', { id: 'device-editor' }),
  );
  return page;
}

function deviceFields(device, type, groups, users) {
  const evse = type.kind === 'evse';
  const specs = [];
  specs.push({ path: 'dev_id', label: 'f.dev_id', type: 'text', hint: 'f.dev_id.hint', readonly: device.dev_id !== undefined && !device.isNew });
  specs.push({ path: 'name', label: 'f.name', type: 'text' });
  specs.push({ path: 'device_enabled', label: 'f.device_enabled', type: 'check' });
  if (type.transport === 'modbus') {
    specs.push({ path: 'address', label: 'f.address', type: 'text', hint: null });
    specs.push({ path: 'id', label: 'f.id', type: 'int', min: 0, max: 255 });
    specs.push({ path: 'poll_interval', label: 'f.poll_interval', type: 'int', min: 100 });
  } else if (type.transport === 'ocpp') {
    // An OCPP wallbox connects to chargebus: its charge point id and connector say which.
    specs.push({ path: 'address', label: 'f.address.ocpp', type: 'text', hint: 'f.address.ocpp.hint' });
    specs.push({ path: 'id', label: 'f.id.ocpp', type: 'int', min: 0, max: 255 });
  } else if (type.transport !== 'http' && type.transport !== 'virtual') {
    // A bridge of another kind: where it finds the device.
    specs.push({ path: 'address', label: 'f.address.other', type: 'text' });
    specs.push({ path: 'id', label: 'f.id.other', type: 'int', min: 0, max: 255 });
  }
  if (device.dev_type === 'evse_powerbrain') specs.push({ path: 'number', label: 'f.number', type: 'int', min: 0 });
  specs.push({
    path: 'group', label: 'f.group', type: 'select',
    options: [[0, t('groups.main')], ...groups.map((g) => [g.id, g.name || `#${g.id}`])],
  });
  specs.push({ path: 'phase_rotation', label: 'f.phase_rotation', type: 'select', options: ROTATIONS.map((r, i) => [i, r]) });
  specs.push({
    path: 'used_phases', label: 'f.used_phases', type: 'select',
    options: PHASE_MASKS.map(([v, label]) => [v, v === 0 ? t(label) : label]),
  });
  if (evse) {
    specs.push(
      { path: 'min_charging_cur', label: 'f.min_charging_cur', type: 'amps', min: 0, max: 80 },
      { path: 'max_charging_cur', label: 'f.max_charging_cur', type: 'expr_amps' },
      { path: 'prio', label: 'f.prio', type: 'int', min: 0, max: 1000 },
      { path: 'pause_min_time', label: 'f.pause_min_time', type: 'int', min: 0 },
      { path: 'failsafe_current', label: 'f.failsafe_current', type: 'amps', min: 0, max: 80 },
      { path: 'battery_save_threshold', label: 'f.battery_save_threshold', type: 'amps', min: 0, max: 80 },
      { path: 'label', label: 'f.label', type: 'text' },
    );
  } else {
    specs.push(
      { path: 'role', label: 'f.role', type: 'select', options: [3, 1, 2, 0].map((r) => [r, t(`role.${r}`)]) },
      { path: 'invert', label: 'f.invert', type: 'check' },
      { path: 'is_va', label: 'f.is_va', type: 'check' },
    );
  }
  const fields = specs.map((spec) => field(spec, device[spec.path]));
  if (type.transport === 'modbus') {
    const address = fields.find((f) => f.spec.path === 'address');
    address.querySelector('input').placeholder = `192.168.1.50:${type.default_port || 502}`;
  }
  let usersBox = null;
  if (evse) {
    usersBox = element('fieldset', { className: 'wide' }, element('legend', {}, t('f.users')));
    const error = element('span', { className: 'field-error', role: 'alert' });
    error.dataset.errorFor = 'users';
    for (const user of users) {
      usersBox.append(element('label', { className: 'field check' },
        element('input', { type: 'checkbox', value: user.id, checked: (device.users || []).includes(user.id), dataset: { path: 'users' } }),
        element('span', {}, user.name || user.id)));
    }
    usersBox.append(error);
  }
  return { fields, usersBox };
}

function openDevice(page, device, groups, users, isNew = false) {
  const editor = page.querySelector('#device-editor');
  const type = types[device.dev_type] || { kind: device.dev_id?.startsWith('E') ? 'evse' : 'meter', transport: 'http' };
  const start = isNew ? { dev_type: device.dev_type, device_enabled: true, isNew: true,
    ...(type.kind === 'evse' ? { min_charging_cur: 6000, max_charging_cur: 16000, prio: 1, pause_min_time: 300, failsafe_current: 6000, battery_save_threshold: 0 } : { role: 3 }),
    id: 1, poll_interval: 1000 } : device;
  const { fields, usersBox } = deviceFields(start, type, groups, users);
  const rules = type.kind === 'evse' ? rulesEditor(device.charging_rules || []) : null;
  const registers = device.dev_type === 'meter_modbus_generic' ? registersEditor(device.modbus_registers || {}) : null;
  const title = isNew ? `${t('setup.new_device')}: ${type.display_name || device.dev_type}` : t('setup.edit_device', { id: device.dev_id });
  const form = element('form', { className: 'form card', dataset: { form: 'device' } },
    element('h3', { className: 'wide' }, title), ...fields, usersBox, registers?.element, rules?.element);
  const cancel = element('button', { type: 'button' }, t('setup.cancel'));
  cancel.addEventListener('click', () => editor.replaceChildren());
  form.append(buttons(element('button', { type: 'submit' }, t('setup.save')), cancel));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = readFields(fields);
    if (!values.dev_id) delete values.dev_id;
    if (!isNew) values.dev_id = device.dev_id;
    values.dev_type = device.dev_type;
    if (usersBox) values.users = [...usersBox.querySelectorAll('input:checked')].map((i) => i.value);
    if (rules) values.charging_rules = rules.read();
    if (registers) values.modbus_registers = registers.read();
    save(form, 'set_params', { devices: [values] }, () => showSetup('devices'));
  });
  editor.replaceChildren(form);
  form.querySelector('input:not([disabled])')?.focus();
}

function registersEditor(registers) {
  const rows = QUANTITIES.map((quantity) => {
    const r = registers[quantity] || {};
    const address = element('input', { type: 'number', min: 0, max: 65535, value: r.address ?? '', dataset: { path: `modbus_registers.${quantity}.address` } });
    const kind = element('select', { dataset: { path: `modbus_registers.${quantity}.kind` } },
      ...REGISTER_KINDS.map((k) => element('option', { value: k, selected: k === (r.kind || 'u16') }, k)));
    const scale = element('input', { type: 'number', step: 'any', value: r.scale ?? 1, dataset: { path: `modbus_registers.${quantity}.scale` } });
    const fn = element('select', { dataset: { path: `modbus_registers.${quantity}.function` } },
      ...['holding', 'input'].map((k) => element('option', { value: k, selected: k === (r.function || 'holding') }, k)));
    const error = element('span', { className: 'field-error' });
    error.dataset.errorFor = `modbus_registers.${quantity}`;
    const row = element('tr', {}, element('th', {}, quantity), element('td', {}, address), element('td', {}, kind),
      element('td', {}, scale), element('td', {}, fn, error));
    row.read = () => (address.value === '' ? null : [quantity, {
      address: Number(address.value), kind: kind.value, scale: Number(scale.value), function: fn.value,
    }]);
    return row;
  });
  const head = element('tr', {}, ...['f.register.quantity', 'f.register.address', 'f.register.kind', 'f.register.scale', 'f.register.function']
    .map((k) => element('th', {}, t(k))));
  const element_ = element('fieldset', { className: 'wide' }, element('legend', {}, t('setup.registers')),
    element('div', { className: 'scroll' }, element('table', { className: 'edit' }, element('thead', {}, head), element('tbody', {}, ...rows))));
  return { element: element_, read: () => Object.fromEntries(rows.map((r) => r.read()).filter(Boolean)) };
}

// -- charging rules (an EVSE's or a user's) ------------------------------------------------

const AMP_MODES = new Set([0, 4]);

function rulesEditor(initial) {
  const body = element('tbody');
  const rows = [];
  const add = (rule) => {
    const r = { days: 127, mode: 0, current: 0, enabled: true, udur: 0, time: 0, dur: 1440, expr: '', solar: 0, ...rule };
    const index = rows.length;
    const path = (k) => `charging_rules.${index}.${k}`;
    const enabled = element('input', { type: 'checkbox', checked: r.enabled, dataset: { path: path('enabled') } });
    const days = element('div', { className: 'days' });
    const dayBoxes = [];
    for (let d = 0; d < 7; d++) {
      const box = element('input', { type: 'checkbox', checked: Boolean(r.days & (1 << d)) });
      dayBoxes.push(box);
      days.append(element('label', {}, box, t(`day.${d}`)));
    }
    const hhmm = `${String(Math.floor(r.time / 60)).padStart(2, '0')}:${String(r.time % 60).padStart(2, '0')}`;
    const time = element('input', { type: 'time', value: hhmm, dataset: { path: path('time') } });
    const dur = element('input', { type: 'number', min: 0, max: 10080, value: r.dur, dataset: { path: path('dur') } });
    const mode = element('select', { dataset: { path: path('mode') } },
      ...[0, 1, 2, 3, 4, 5].map((m) => element('option', { value: m, selected: m === r.mode }, t(`rule.mode.${m}`))));
    const current = element('input', { type: 'number', step: 'any', value: AMP_MODES.has(r.mode) ? r.current / 1000 : r.current, dataset: { path: path('current') } });
    const solar = element('input', { type: 'number', step: 'any', min: 0, value: r.solar / 1000, dataset: { path: path('solar') } });
    const expr = element('input', { type: 'text', value: r.expr, dataset: { path: path('expr') } });
    const udur = element('input', { type: 'number', min: 0, value: r.udur, dataset: { path: path('udur') } });
    const error = element('span', { className: 'field-error' });
    error.dataset.errorFor = `charging_rules.${index}`;
    const remove = element('button', { type: 'button', className: 'danger' }, t('setup.delete'));
    const row = element('tr', {}, ...[enabled, days, time, dur, mode, current, solar, expr, udur].map((c) => element('td', {}, c)),
      element('td', {}, remove, error));
    const entry = {
      row,
      removed: false,
      read: () => {
        const [h, m] = (time.value || '00:00').split(':').map(Number);
        const modeValue = Number(mode.value);
        return {
          ...rule,
          enabled: enabled.checked,
          days: dayBoxes.reduce((bits, box, d) => bits | (box.checked ? 1 << d : 0), 0),
          time: h * 60 + m,
          dur: Number(dur.value),
          mode: modeValue,
          current: AMP_MODES.has(modeValue) ? Math.round(Number(current.value) * 1000) : Math.round(Number(current.value)),
          solar: Math.round(Number(solar.value) * 1000),
          expr: expr.value,
          udur: Number(udur.value),
        };
      },
    };
    remove.addEventListener('click', () => {
      entry.removed = true;
      row.remove();
    });
    rows.push(entry);
    body.append(row);
  };
  initial.forEach(add);
  const head = element('tr', {}, ...['f.rule.enabled', 'f.rule.days', 'f.rule.time', 'f.rule.dur', 'f.rule.mode', 'f.rule.current',
    'f.rule.solar', 'f.rule.expr', 'f.rule.udur'].map((k) => element('th', {}, t(k))), element('th'));
  const addButton = element('button', { type: 'button' }, t('setup.add_rule'));
  addButton.addEventListener('click', () => add({}));
  const error = element('span', { className: 'field-error' });
  error.dataset.errorFor = 'charging_rules';
  return {
    element: element('fieldset', { className: 'wide', dataset: { rules: '' } }, element('legend', {}, t('setup.rules')),
      element('div', { className: 'scroll' }, element('table', { className: 'edit' }, element('thead', {}, head), body)), addButton, error),
    read: () => readRows(rows, 'charging_rules'),
  };
}

// -- groups ------------------------------------------------------------------------------

async function groupsPage() {
  const answer = await cnf('get_params');
  const body = element('tbody');
  const rows = [];
  const add = (group) => {
    const index = rows.length;
    const path = (k) => `groups.${index}.${k}`;
    const id = element('input', { type: 'number', min: 1, value: group.id ?? '', dataset: { path: path('id') } });
    const name = element('input', { type: 'text', value: group.name ?? '', dataset: { path: path('name') } });
    const parent = element('input', { type: 'number', min: 0, value: group.parent ?? 0, dataset: { path: path('parent') } });
    const max = element('input', { type: 'number', min: 0, step: 'any', value: group.max_current !== undefined ? group.max_current / 1000 : '', dataset: { path: path('max_current') } });
    const error = element('span', { className: 'field-error' });
    error.dataset.errorFor = `groups.${index}`;
    const remove = element('button', { type: 'button', className: 'danger' }, t('setup.delete'));
    const row = element('tr', {}, ...[id, name, parent, max].map((c) => element('td', {}, c)), element('td', {}, remove, error));
    const entry = {
      row,
      removed: false,
      idValue: () => Number(id.value),
      read: () => ({ id: Number(id.value), name: name.value, parent: Number(parent.value), max_current: Math.round(Number(max.value) * 1000) }),
    };
    remove.addEventListener('click', () => { entry.removed = true; row.remove(); });
    rows.push(entry);
    body.append(row);
  };
  answer.groups.forEach(add);
  const head = element('tr', {}, ...['f.group.id', 'f.group.name', 'f.group.parent', 'f.group.max_current'].map((k) => element('th', {}, t(k))), element('th'));
  const addButton = element('button', { type: 'button' }, t('setup.add_group'));
  addButton.addEventListener('click', () => {
    const next = Math.max(0, ...rows.filter((r) => !r.removed).map((r) => r.idValue() || 0)) + 1;
    add({ id: next, name: '', parent: 0, max_current: 16000 });
  });
  const form = element('form', { className: 'form', dataset: { form: 'groups' } },
    element('p', { className: 'wide muted' }, answer.groups.length ? '' : t('setup.no_groups')),
    element('div', { className: 'wide scroll' }, element('table', { className: 'edit' }, element('thead', {}, head), body)),
    buttons(addButton, element('button', { type: 'submit' }, t('setup.save'))));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    save(form, 'set_params', { groups: readRows(rows, 'groups') });
  });
  return form;
}

// -- users and RFIDs -------------------------------------------------------------------------

async function usersPage() {
  const [users, devices] = await Promise.all([cnf('get_users'), cnf('get_devices')]);
  const evses = devices.filter((d) => d.dev_id.startsWith('E'));
  const page = element('div');
  if (!users.length) page.append(element('p', { className: 'muted' }, t('setup.no_users')));
  for (const user of users) page.append(userForm(user, evses));
  const add = element('button', { type: 'button' }, t('setup.add_user'));
  add.addEventListener('click', () => {
    add.replaceWith(userForm({ name: '', display: true, dev_ids: [], rfids: [], charging_rules: [] }, evses, true));
  });
  page.append(add);
  return page;
}

function userForm(user, evses, isNew = false) {
  const fields = [
    field({ path: 'name', label: 'f.user.name', type: 'text' }, user.name),
    field({ path: 'display', label: 'f.user.display', type: 'check' }, user.display),
  ];
  const devBox = element('fieldset', { className: 'wide' }, element('legend', {}, t('f.user.dev_ids')));
  for (const evse of evses) {
    devBox.append(element('label', { className: 'field check' },
      element('input', { type: 'checkbox', value: evse.dev_id, checked: user.dev_ids.includes(evse.dev_id) }),
      element('span', {}, `${evse.name || evse.dev_id} (${evse.dev_id})`)));
  }
  const devError = element('span', { className: 'field-error' });
  devError.dataset.errorFor = 'dev_ids';
  devBox.append(devError);
  const rfidBody = element('tbody');
  const rfidRows = [];
  const addRfid = (rfid) => {
    const index = rfidRows.length;
    const path = (k) => `rfids.${index}.${k}`;
    const id = element('input', { type: 'text', value: rfid.id ?? '', autocomplete: 'off', dataset: { path: path('id') } });
    const name = element('input', { type: 'text', value: rfid.name ?? '', dataset: { path: path('name') } });
    const auth = element('input', { type: 'checkbox', checked: rfid.ac_auth ?? true });
    const ovch = element('input', { type: 'checkbox', checked: rfid.ac_ovch ?? false });
    const error = element('span', { className: 'field-error' });
    error.dataset.errorFor = `rfids.${index}`;
    const remove = element('button', { type: 'button', className: 'danger' }, t('setup.delete'));
    const row = element('tr', {}, ...[id, name, auth, ovch].map((c) => element('td', {}, c)), element('td', {}, remove, error));
    const entry = { row, removed: false, read: () => ({ ...rfid, id: id.value.trim(), name: name.value, ac_auth: auth.checked, ac_ovch: ovch.checked }) };
    remove.addEventListener('click', () => { entry.removed = true; row.remove(); });
    rfidRows.push(entry);
    rfidBody.append(row);
  };
  user.rfids.forEach(addRfid);
  const addButton = element('button', { type: 'button' }, t('setup.add_rfid'));
  addButton.addEventListener('click', () => addRfid({}));
  const rfidError = element('span', { className: 'field-error' });
  rfidError.dataset.errorFor = 'rfids';
  const head = element('tr', {}, ...['f.rfid.id', 'f.rfid.name', 'f.rfid.ac_auth', 'f.rfid.ac_ovch'].map((k) => element('th', {}, t(k))), element('th'));
  const rfids = element('fieldset', { className: 'wide' }, element('legend', {}, 'RFID/PIN'),
    element('div', { className: 'scroll' }, element('table', { className: 'edit' }, element('thead', {}, head), rfidBody)), addButton, rfidError);
  const rules = rulesEditor(user.charging_rules);
  const remove = element('button', { type: 'button', className: 'danger' }, t('setup.delete'));
  const form = element('form', { className: 'form card', dataset: { form: 'user', user: user.id || '' } },
    element('h3', { className: 'wide' }, user.name || user.id || t('setup.add_user')), ...fields, devBox, rfids, rules.element,
    buttons(element('button', { type: 'submit' }, t('setup.save')), isNew ? null : remove));
  remove.addEventListener('click', async () => {
    if (!confirm(t('setup.confirm_delete', { what: user.name || user.id }))) return;
    try {
      await cnf('del_user', { params: { id: user.id } });
      await showSetup('users');
      status(t('setup.deleted', { what: user.name || user.id }));
    } catch (error) {
      status(t('setup.failed', { error: error.message }), true);
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const body = {
      ...readFields(fields),
      dev_ids: [...devBox.querySelectorAll('input:checked')].map((i) => i.value),
      rfids: readRows(rfidRows, 'rfids'),
      charging_rules: rules.read(),
    };
    if (!isNew) body.id = user.id;
    save(form, 'set_user', body, () => showSetup('users'));
  });
  return form;
}
