// Shared by /login and /manage: language, API calls (session from localStorage, any 401 → /login), toasts,
// a tiny DOM builder (text is always set as text, never as HTML) and formatting.
'use strict';

const UI = (() => {
  const LANG_KEY = 'adminLang';
  const TOKEN_KEY = 'adminToken';
  let lang = localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'zh';

  function t(key, vars) {
    let s = (I18N[lang] && I18N[lang][key]) ?? I18N.zh[key] ?? key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split('{' + k + '}').join(String(v));
    return s;
  }

  // Static text in the HTML: data-i18n (text), data-i18n-ph (placeholder), data-i18n-aria (aria-label).
  function applyI18n(root = document) {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const e of root.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of root.querySelectorAll('[data-i18n-ph]')) e.placeholder = t(e.dataset.i18nPh);
    for (const e of root.querySelectorAll('[data-i18n-aria]')) e.setAttribute('aria-label', t(e.dataset.i18nAria));
    for (const e of root.querySelectorAll('[data-i18n-title]')) e.title = t(e.dataset.i18nTitle);
  }

  function setLang(l) {
    lang = l === 'en' ? 'en' : 'zh';
    localStorage.setItem(LANG_KEY, lang);
    applyI18n();
  }

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  const session = {
    get: () => localStorage.getItem(TOKEN_KEY),
    set: (v) => localStorage.setItem(TOKEN_KEY, v),
    clear: () => localStorage.removeItem(TOKEN_KEY),
  };

  // Resolves to the JSON body; rejects with an ApiError carrying the API's own message.
  async function api(path, { method = 'GET', body, raw = false, noRedirect = false } = {}) {
    const headers = {};
    const tok = session.get();
    if (tok) headers.Authorization = 'Bearer ' + tok;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(t('err.network'), 0);
    }
    if (r.status === 401 && !noRedirect) {
      session.clear();
      location.href = '/login';
      throw new ApiError('401', 401);
    }
    if (raw && r.ok) return r;
    let j = null;
    try { j = await r.json(); } catch { /* not JSON */ }
    if (!r.ok) {
      const msg = (j && j.error && (j.error.message || j.error)) || (j && j.message) || `HTTP ${r.status}`;
      throw new ApiError(String(msg), r.status, j);
    }
    if (j && j.success === false) throw new ApiError(j.message || t('err.failed'), r.status, j);
    return j;
  }

  function toast(msg, kind = 'ok') {
    const box = document.getElementById('toasts');
    if (!box) return;
    const e = h('div', { class: 'toast toast-' + kind, role: kind === 'err' ? 'alert' : 'status' }, msg);
    // At most three at a time: a burst of actions must not cover the page on a phone.
    while (box.children.length >= 3) box.firstChild.remove();
    box.append(e);
    setTimeout(() => e.remove(), kind === 'err' ? 8000 : 4000);
  }

  // h('button', {class: 'x', onclick: f}, 'text', child…): attributes, properties for on*/value/checked.
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'value' || k === 'checked' || k === 'selected') e[k] = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtDur(ms) {
    if (!ms || ms <= 0) return '—';
    const s = Math.ceil(ms / 1000);
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    return `${Math.floor(m / 60)}h ${m % 60}m`;
  }
  function fmtSecs(s) {
    if (s === null || s === undefined || Number.isNaN(+s)) return '—';
    return s < 1 ? Math.round(s * 1000) + ' ms' : (+s).toFixed(2) + ' s';
  }
  const fmtNum = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString());

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard API needs a secure context; plain http on a LAN address falls back to execCommand.
      const ta = h('textarea', { style: 'position:fixed;opacity:0' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    toast(t('common.copied') + ': ' + text);
  }

  return { t, applyI18n, setLang, lang: () => lang, api, ApiError, session, toast, h, fmtTime, fmtDur, fmtSecs, fmtNum, copy };
})();
