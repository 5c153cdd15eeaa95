// The live view: one EventSource on /ui/events (a snapshot, then the changes), rendered at
// most once per animation frame. Tiles are cloned from <template>s and updated in place.

import { applyTexts, t } from './texts.js';
import { cnf } from './api.js';
import { drawChart, legend, WINDOW_S } from './chart.js';

// ROTATION[r][i]: the grid phase (0..2) of a device's own phase i (docs/load-balancing.md).
const ROTATION = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [1, 0, 2], [2, 1, 0]];
const ROLE_GRID = 3;
const NEW_TILES_PER_FRAME = 24;

export const store = { params: {}, groups: [], devices: new Map(), history: [], sessions: {} };
const dirty = new Set();
let everything = true;
let chartDirty = true;
let frame = 0;
let source = null;
let added = false;
const $ = (id) => document.getElementById(id);

const amps = (ma) => (Number(ma || 0) / 1000).toFixed(1);
const kw = (w) => `${(Number(w || 0) / 1000).toFixed(Math.abs(w) >= 10000 ? 1 : 2)} kW`;
const kwh = (wh) => `${(Number(wh || 0) / 1000).toFixed(1)} kWh`;
const clock = (unix) => new Date(unix * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const maxCurrent = (info) => (typeof info.max_charging_cur === 'number' ? info.max_charging_cur : 0);

function setConn(state) {
  const conn = $('conn');
  conn.dataset.state = state;
  conn.textContent = t(`conn.${state}`);
}

export function startLive() {
  legend($('chart-legend'));
  connect();
  window.addEventListener('resize', () => {
    chartDirty = true;
    schedule();
  });
  // The chart moves on with time even when nothing changes.
  setInterval(() => {
    chartDirty = true;
    schedule();
  }, 5000);
}

function connect() {
  setConn('connecting');
  source = new EventSource('/ui/events');
  source.addEventListener('snapshot', (event) => onSnapshot(JSON.parse(event.data)));
  source.addEventListener('update', (event) => onUpdate(JSON.parse(event.data)));
  source.addEventListener('error', () => {
    setConn('reconnecting');
    // The browser retries by itself after a broken stream, but not after an error answer
    // (the service shutting down): then a new one, a little later.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  });
}

function onSnapshot(data) {
  if (!performance.getEntriesByName('snapshot').length) performance.mark('snapshot');
  store.params = data.params || {};
  store.groups = data.groups || [];
  store.history = data.history || [];
  store.sessions = data.sessions || {};
  store.devices = new Map((data.infos || []).map((info) => [info.dev_id, info]));
  everything = true;
  chartDirty = true;
  setConn('live');
  schedule();
}

function onUpdate(data) {
  if (data.params) store.params = data.params;
  if (data.groups) store.groups = data.groups;
  if (data.sessions) store.sessions = data.sessions;
  for (const change of data.infos || []) {
    const held = store.devices.get(change.dev_id);
    if (held) Object.assign(held, change);
    else store.devices.set(change.dev_id, change);
    dirty.add(change.dev_id);
  }
  for (const devId of data.removed || []) {
    store.devices.delete(devId);
    document.querySelector(`.tile[data-dev="${CSS.escape(devId)}"]`)?.remove();
  }
  if (data.samples) {
    store.history.push(...data.samples);
    const start = Date.now() / 1000 - WINDOW_S - 60;
    while (store.history.length && store.history[0][0] < start) store.history.shift();
    chartDirty = true;
  }
  if (data.params || data.removed) everything = true;
  schedule();
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  const ids = everything ? [...store.devices.keys()] : [...dirty];
  dirty.clear();
  if (everything) pruneTiles();
  // New tiles cost most (cloning, layout): a big site's first tiles show in the first
  // frame, the rest follow in the next ones.
  let created = 0;
  for (const [i, devId] of ids.entries()) {
    const info = store.devices.get(devId);
    if (!info) continue;
    if (created >= NEW_TILES_PER_FRAME && !tileExists(devId)) {
      for (const rest of ids.slice(i)) dirty.add(rest);
      schedule();
      break;
    }
    if (!tileExists(devId)) created += 1;
    renderTile(info);
  }
  if (added) sortTiles();
  renderSite();
  if (everything || ids.length) renderGroups();
  if (chartDirty && !document.hidden) {
    drawChart($('chart'), store.history, (store.params.max_total_current || 0) / 1000);
    chartDirty = false;
  }
  everything = false;
  // For the benchmark (bench/bench_dashboard.py): when the first tiles were drawn.
  if (store.devices.size && !performance.getEntriesByName('first-tile').length) {
    performance.mark('first-tile');
  }
}

// Tiles in configuration order (new ones are appended first).
function sortTiles() {
  added = false;
  const position = new Map([...store.devices.keys()].map((id, i) => [id, i]));
  for (const container of [$('evses'), $('meters')]) {
    const tiles = [...container.children];
    const sorted = [...tiles].sort((a, b) => position.get(a.dataset.dev) - position.get(b.dataset.dev));
    if (sorted.some((tile, i) => tile !== tiles[i])) container.append(...sorted);
  }
}

function pruneTiles() {
  for (const tile of document.querySelectorAll('.tile[data-dev]')) {
    if (!store.devices.has(tile.dataset.dev)) tile.remove();
  }
}

// -- the site ---------------------------------------------------------------------------

function onGridPhases(info, sign = 1) {
  const out = [0, 0, 0];
  const rotation = ROTATION[info.phase_rotation] || ROTATION[0];
  const currents = [info.current_l1, info.current_l2, info.current_l3];
  currents.forEach((c, i) => {
    out[rotation[i]] += sign * Math.max(sign > 0 && info.is_evse ? 0 : -Infinity, Number(c || 0));
  });
  return out;
}

function phaseRow(list, index) {
  let row = list.children[index];
  if (!row) {
    row = document.createElement('div');
    row.className = 'phase';
    row.innerHTML = '<span class="label"></span><div class="bar"><div class="fill"></div><div class="mark"></div></div><span class="value"></span>';
    list.append(row);
  }
  return row;
}

// A bar: `real` against `limit` on a scale of `scale` (all mA); red when real is above limit.
function setBar(row, label, real, limit, scale, { over = real > limit, unused = false } = {}) {
  row.querySelector('.label').textContent = label;
  const bar = row.querySelector('.bar');
  const s = Math.max(scale, real, limit, 1);
  bar.querySelector('.fill').style.width = `${Math.max(0, Math.min(100, (real / s) * 100))}%`;
  const mark = bar.querySelector('.mark');
  mark.hidden = !(limit > 0);
  mark.style.left = `calc(${Math.min(100, (limit / s) * 100)}% - 1px)`;
  bar.classList.toggle('over', over);
  row.classList.toggle('unused', unused);
  row.querySelector('.value').textContent = t('tile.phase_amps', { real: amps(real), limit: amps(limit) });
}

function gridMeters(group) {
  return [...store.devices.values()].filter(
    (d) => !d.is_evse && d.role === ROLE_GRID && (d.group || 0) === group && d.device_enabled,
  );
}

function sumPhases(devices, sign = 1) {
  const total = [0, 0, 0];
  for (const d of devices) onGridPhases(d, sign).forEach((c, i) => (total[i] += c));
  return total;
}

function renderSite() {
  const p = store.params;
  const fuse = p.max_total_current || 0;
  $('site-title').textContent = p.title || t('app.title');
  $('fuse').textContent = t('site.fuse', { a: amps(fuse) });
  const meters = gridMeters(0);
  const hasGrid = meters.some((m) => m.state !== 6);
  $('no-grid').hidden = hasGrid;
  $('grid-phases').hidden = !hasGrid;
  const grid = sumPhases(meters);
  let overdraft = false;
  grid.forEach((c, i) => {
    const over = hasGrid && c > fuse;
    overdraft = overdraft || over;
    setBar(phaseRow($('grid-phases'), i), `L${i + 1}`, c, fuse, fuse, { over });
  });
  const evses = [...store.devices.values()].filter((d) => d.is_evse);
  const evseUse = sumPhases(evses);
  const evseLimit = p.max_total_evse_current || Math.max(0, fuse - (p.reserve_current || 0));
  evseUse.forEach((c, i) => setBar(phaseRow($('evse-phases'), i), `L${i + 1}`, c, evseLimit, evseLimit));
  $('evse-power').textContent = t('site.evse_power', {
    used: (Number(p.cons_evse_power || 0) / 1000).toFixed(1),
    avail: (Number(p.avail_evse_power || 0) / 1000).toFixed(1),
  });
  $('overdraft').hidden = !overdraft;
  $('overdraft-seen').hidden = !(p.overdraft_cur > 0);
  $('overdraft-seen').textContent = t('site.overdraft_seen', { a: amps(p.overdraft_cur) });
  $('observation').hidden = p.lb_enabled !== false;
  $('chart-title').textContent = t('chart.title', { min: WINDOW_S / 60 });
  const none = store.devices.size === 0;
  $('no-devices').hidden = !none;
  $('evses-title').hidden = evses.length === 0;
  $('meters-title').hidden = evses.length === store.devices.size;
}

// -- groups -----------------------------------------------------------------------------

function renderGroups() {
  const card = $('groups-card');
  card.hidden = store.groups.length === 0;
  if (card.hidden) return;
  const children = new Map();
  for (const g of store.groups) {
    const parent = g.parent || 0;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(g);
  }
  const devices = [...store.devices.values()];
  const evsesIn = (ids) => devices.filter((d) => d.is_evse && ids.has(d.group || 0));
  const subtree = (id) => {
    const ids = new Set([id]);
    const walk = (g) => (children.get(g) || []).forEach((c) => { if (!ids.has(c.id)) { ids.add(c.id); walk(c.id); } });
    walk(id);
    return ids;
  };
  const node = (group) => {
    const li = document.createElement('li');
    const box = document.createElement('div');
    box.className = 'group';
    box.dataset.group = String(group.id);
    const title = document.createElement('h3');
    title.textContent = `${group.name || `#${group.id}`} `;
    const small = document.createElement('small');
    small.textContent = t('groups.limit', { a: amps(group.max_current) });
    title.append(small);
    const list = document.createElement('div');
    list.className = 'phase-list';
    const meters = gridMeters(group.id);
    const use = meters.length ? sumPhases(meters) : sumPhases(evsesIn(subtree(group.id)));
    use.forEach((c, i) => setBar(phaseRow(list, i), `L${i + 1}`, c, group.max_current, group.max_current, { over: c > group.max_current }));
    box.append(title, list);
    li.append(box);
    const below = children.get(group.id) || [];
    if (below.length) {
      const ul = document.createElement('ul');
      below.forEach((g) => ul.append(node(g)));
      li.append(ul);
    }
    return li;
  };
  const main = { id: 0, name: t('groups.main'), max_current: store.params.max_total_current || 0 };
  $('group-tree').replaceChildren(node(main));
}

// -- tiles ------------------------------------------------------------------------------

function newTile(info) {
  const kind = info.is_evse ? 'evse' : 'meter';
  const tile = $(`tpl-${kind}`).content.firstElementChild.cloneNode(true);
  applyTexts(tile);
  tile.dataset.dev = info.dev_id;
  tile.refs = {};
  for (const el of tile.querySelectorAll('[data-f]')) tile.refs[el.dataset.f] = el;
  if (info.is_evse) wireActions(tile);
  $(info.is_evse ? 'evses' : 'meters').append(tile);
  added = true;
  return tile;
}

function tileExists(devId) {
  return document.querySelector(`.tile[data-dev="${CSS.escape(devId)}"]`) !== null;
}

function tileOf(info) {
  const tile = document.querySelector(`.tile[data-dev="${CSS.escape(info.dev_id)}"]`);
  if (tile && tile.classList.contains(info.is_evse ? 'evse' : 'meter')) return tile;
  tile?.remove();
  return newTile(info);
}

function comText(info) {
  if (info.com_err) {
    return t('tile.com_err', { s: info.com_err_secs || 0, error: info.last_error || '?' });
  }
  const parts = [];
  if (info.last_error) parts.push(t('tile.last_error', { error: info.last_error }));
  if (info.com_errors) parts.push(t('tile.com_errors', { n: info.com_errors }));
  return parts.join(' · ');
}

function renderTile(info) {
  const tile = tileOf(info);
  const f = tile.refs;
  f.name.textContent = info.name || info.dev_id;
  f.dev_id.textContent = [info.dev_id, info.dev_type_name].filter(Boolean).join(' · ');
  f.com.textContent = comText(info);
  tile.classList.toggle('com-err', Boolean(info.com_err));
  f.power.textContent = kw(info.power_w);
  if (info.is_evse) renderEvse(info, f);
  else renderMeter(info, f);
}

function renderEvse(info, f) {
  const state = t(`state.${info.state}`) === `state.${info.state}` ? t('state.unknown') : t(`state.${info.state}`);
  const extra = [];
  if (!info.device_enabled) extra.push(t('state.disabled'));
  if (info.paused) extra.push(t('state.paused'));
  f.state.textContent = [state, ...extra].join(' · ');
  f.state.dataset.state = String(info.state);
  const reason = info.lreason || 'none';
  const text = t(`reason.${reason}`);
  f.reason.textContent = text === `reason.${reason}` ? reason : text;
  f.reason.dataset.reason = reason;
  const limit = info.charging_current || 0;
  const scale = Math.max(maxCurrent(info), limit);
  const used = info.phases || 7;
  for (let i = 0; i < 3; i++) {
    const real = info[`current_l${i + 1}`] || 0;
    const onPhase = (used >> i) & 1;
    setBar(phaseRow(f.phases, i), `L${i + 1}`, real, onPhase ? limit : 0, scale, {
      over: real > (onPhase ? limit : 0) + 1000,
      unused: !onPhase && real < 1000,
    });
  }
  f.allocated.textContent = `${amps(limit)} A`;
  f.energy.textContent = kwh(info.total_energy);
  const session = store.sessions[info.dev_id];
  f.session.textContent = session
    ? t('tile.session_since', { kwh: ((info.total_energy - session[0]) / 1000).toFixed(1), time: clock(session[1]) })
    : '–';
  f.user.textContent = info.user || '';
  f.user.parentElement.hidden = !info.user;
  const ocpp = info.ocpp && typeof info.ocpp === 'object' ? info.ocpp : null;
  const ocppText = ocpp ? [ocpp.status, ocpp.error_code && ocpp.error_code !== 'NoError' ? ocpp.error_code : '']
    .filter(Boolean).join(' · ') : '';
  f.ocpp.textContent = ocppText;
  f.ocpp.parentElement.hidden = !ocppText;
  f.pause.textContent = info.paused
    ? t('tile.pause', { s: info.pause_time || 0, min: info.pause_min_time || 0 })
    : '';
  const notes = [];
  if (info.overrides & 1) notes.push(t('tile.charging_off'));
  if (info.overrides & 2) notes.push(t('tile.rules_off'));
  const max = maxCurrent(info);
  if (max && info.ov_cur < max) notes.push(t('tile.limit_set', { a: amps(info.ov_cur) }));
  f.overrides.textContent = notes.join(' · ');
}

function renderMeter(info, f) {
  f.role.textContent = t(`role.${info.role ?? 0}`);
  f.import.textContent = kwh(info.import);
  f.export.textContent = kwh(info.export);
  for (let i = 1; i <= 3; i++) {
    f[`c${i}`].textContent = `${amps(info[`current_l${i}`])} A`;
    f[`v${i}`].textContent = `${Math.round(info[`voltage_l${i}`] || 0)} V`;
  }
}

// -- actions (admin, through /cnf) ---------------------------------------------------------

const ACTIONS = {
  clear_limit: { params: { mamps: -1 }, cmd: 'override_device' },
  pause: { params: { flags: 'C' }, cmd: 'override_device' },
  resume: { params: { flags: 'c' }, cmd: 'override_device' },
  rules_off: { params: { flags: 'E' }, cmd: 'override_device' },
  rules_on: { params: { flags: 'e' }, cmd: 'override_device' },
};

async function act(tile, what, cmd, params) {
  const answer = tile.refs.answer;
  answer.classList.remove('failed');
  answer.textContent = '…';
  try {
    await cnf(cmd, { params: { dev_id: tile.dataset.dev, ...params } });
    answer.textContent = t('action.ok', { what });
  } catch (error) {
    answer.classList.add('failed');
    answer.textContent = t('action.failed', { what, error: error.message });
  }
}

function wireActions(tile) {
  for (const button of tile.querySelectorAll('button[data-action]')) {
    const spec = ACTIONS[button.dataset.action];
    button.addEventListener('click', () => act(tile, button.textContent, spec.cmd, spec.params));
  }
  const limit = tile.querySelector('form[data-action="limit"]');
  limit.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = Number(limit.elements.amps.value);
    act(tile, t('action.set_limit'), 'override_device', { mamps: Math.round(value * 1000) });
  });
  const rfid = tile.querySelector('form[data-action="rfid"]');
  rfid.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = rfid.elements.rfid.value.trim();
    rfid.elements.rfid.value = '';
    act(tile, t('action.rfid'), 'enter_rfid', { rfid: value });
  });
}
