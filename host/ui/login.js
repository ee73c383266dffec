// The login page: probe a stored session (→ /manage when still valid), else sign in and keep the token.
'use strict';
(async () => {
  const { t, api, session, setLang, applyI18n, lang } = UI;
  const form = document.getElementById('login-form');
  const msg = document.getElementById('login-error');
  const btn = document.getElementById('login-submit');
  const langSel = document.getElementById('lang');
  langSel.value = lang();
  langSel.addEventListener('change', () => setLang(langSel.value));
  applyI18n();

  if (session.get()) {
    try {
      await api('/api/stats', { noRedirect: true });
      location.replace('/manage');
      return;
    } catch {
      session.clear();
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    btn.disabled = true;
    btn.textContent = t('login.busy');
    try {
      const r = await api('/api/login', {
        method: 'POST',
        noRedirect: true,
        body: { username: form.username.value.trim(), password: form.password.value },
      });
      session.set(r.token);
      location.replace('/manage');
    } catch (e) {
      msg.textContent = e.message || t('login.failed');
      form.password.focus();
      form.password.select();
    } finally {
      btn.disabled = false;
      btn.textContent = t('login.submit');
    }
  });
})();
