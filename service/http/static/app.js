// The page's shell: texts, the two views (#live, #setup/...), the log-in button.

import { applyTexts, t } from './texts.js';
import { isAdmin, login, logout, onAuthChange } from './api.js';
import { startLive } from './live.js';
import { showSetup } from './setup.js';

function route() {
  const [view, tab] = location.hash.replace(/^#\/?/, '').split('/');
  const setup = view === 'setup';
  document.getElementById('view-live').hidden = setup;
  document.getElementById('view-setup').hidden = !setup;
  for (const link of document.querySelectorAll('.top nav a')) {
    if ((link.dataset.view === 'setup') === setup) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (setup) showSetup(tab || 'params');
}

function authButton() {
  const button = document.getElementById('auth-button');
  button.textContent = isAdmin() ? t('auth.logout') : t('auth.login');
}

applyTexts(document);
document.getElementById('auth-button').addEventListener('click', () => {
  if (isAdmin()) logout();
  else login();
});
onAuthChange(authButton);
onAuthChange(route);
authButton();
window.addEventListener('hashchange', route);
route();
startLive();
