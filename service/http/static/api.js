// /cnf from the page. The admin's password is asked in the page's own dialog and sent as a
// basic-auth header by the page itself, never left to the browser: with credentials:
// 'omit' the browser neither remembers it for the site nor pops up its own prompt, so a
// request another site makes the browser send carries no credentials. The password is kept
// for this tab only (sessionStorage) and forgotten on "Log out".

import { t } from './texts.js';

const KEY = 'chargebus.admin';
let token = sessionStorage.getItem(KEY);
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export const isAdmin = () => token !== null;
export const onAuthChange = (fn) => listeners.add(fn);

function setToken(value) {
  token = value;
  if (value === null) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, value);
  for (const fn of listeners) fn();
}

export const logout = () => setToken(null);

function encode(user, password) {
  // btoa takes Latin-1 only: a password in UTF-8, as curl --user sends it.
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return btoa(String.fromCharCode(...bytes));
}

async function request(cmd, { params = {}, body, auth = token } = {}) {
  const url = new URL('/cnf', location.origin);
  url.searchParams.set('cmd', cmd);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  const headers = {};
  if (auth) headers.Authorization = `Basic ${auth}`;
  const init = { method: 'GET', headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const message =
    data && typeof data === 'object' && typeof data.error === 'string'
      ? data.error
      : typeof data === 'string'
        ? data
        : `HTTP ${response.status}`;
  throw new ApiError(response.status, message, data);
}

// A /cnf command; on 401 the page asks for the admin password once and tries again.
export async function cnf(cmd, options = {}) {
  try {
    return await request(cmd, options);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    if (token !== null) setToken(null);
    if (!(await login(error.message))) throw error;
    return request(cmd, options);
  }
}

// Asks for the admin password and checks it; true once it is right, false on cancel.
export function login(reason = '') {
  const dialog = document.getElementById('login-dialog');
  const form = dialog.querySelector('form');
  const message = dialog.querySelector('[data-f="message"]');
  const password = form.elements.password;
  message.textContent = reason ? `${t('auth.needed')} (${reason})` : t('auth.explain');
  password.value = '';
  return new Promise((resolve) => {
    const finish = (ok) => {
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('cancel', cancel);
      cancelButton.removeEventListener('click', cancel);
      dialog.close();
      resolve(ok);
    };
    const cancelButton = form.querySelector('[data-f="cancel"]');
    const cancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    const submit = async (event) => {
      event.preventDefault();
      const candidate = encode(form.elements.user.value, password.value);
      try {
        await request('get_devices', { auth: candidate });
      } catch (error) {
        message.textContent = t('auth.wrong', { error: error.message });
        password.select();
        return;
      }
      setToken(candidate);
      finish(true);
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('cancel', cancel);
    cancelButton.addEventListener('click', cancel);
    dialog.showModal();
    password.focus();
  });
}

export async function getJson(path) {
  const response = await fetch(path, { credentials: 'omit', cache: 'no-store' });
  if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`, null);
  return response.json();
}
