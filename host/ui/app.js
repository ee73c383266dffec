// The admin console (/manage): one page, one tab per section, hash routing (#tokens…), rendered with UI.h.
'use strict';
(() => {
  const { t, api, h, toast, fmtTime, fmtDur, fmtSecs, fmtNum, copy, session } = UI;
  const $ = (s, r = document) => r.querySelector(s);
  const TABS = ['overview', 'tokens', 'logs', 'proxies', 'plugins', 'settings'];
  let current = null;
  let timer = null;

  // ---------- small building blocks ----------

  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k instanceof Node ? k : String(k));
    return e;
  }

  // Line icons drawn inline (no icon font to fetch): copy (two sheets) and mask (asterisk in a box).
  const ICONS = {
    copy: ['M9 9h10v10H9z', 'M5 15V5h10'],
    mask: ['M4 6h16v12H4z', 'M12 9v6', 'M9.4 10.5l5.2 3', 'M14.6 10.5l-5.2 3'],
  };
  const icon = (name) => s('svg', { viewBox: '0 0 24 24', width: 15, height: 15, 'aria-hidden': 'true', class: 'icon' },
    ...ICONS[name].map((d) => s('path', { d })));

  const fail = (e) => { if (e && e.status !== 401) toast(e.message || t('err.failed'), 'err'); };
  const isMissing = (e) => e && e.status === 404;
  const unavailable = () => h('div', { class: 'panel empty-state', role: 'note' }, t('common.unavailable'));

  function card(label, value, sub, tone) {
    return h('div', { class: 'card' + (tone ? ' card-' + tone : '') },
      h('div', { class: 'card-label' }, label),
      h('div', { class: 'card-value' }, value),
      sub ? h('div', { class: 'card-sub' }, sub) : null);
  }

  function badge(text, tone) { return h('span', { class: 'badge badge-' + tone }, text); }

  const STATUS_TONE = { '正常': 'ok', '未使用': 'info', '限流中': 'warn', '失效': 'bad' };
  const statusBadge = (s) => badge(t('st.' + s), STATUS_TONE[s] || 'muted');

  // Tables: one header row, data-label on cells so phones can show rows as cards.
  function table(el, cols, rows, empty) {
    const head = h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', class: c.cls }, c.label))));
    const body = h('tbody');
    if (!rows.length) {
      body.append(h('tr', { class: 'empty-row' }, h('td', { colspan: cols.length }, empty || t('common.empty'))));
    }
    for (const r of rows) {
      const tr = h('tr', r.attrs || null);
      // Empty cells ('—') are dropped from the stacked phone layout to keep cards short.
      cols.forEach((c, i) => tr.append(h('td', { 'data-label': typeof c.label === 'string' ? c.label : '',
        class: [c.cls, r.cells[i] === '—' ? 'is-empty' : ''].filter(Boolean).join(' ') || null }, r.cells[i])));
      body.append(tr);
    }
    el.replaceChildren(head, body);
  }

  function pager(el, page, size, total, go) {
    const pages = Math.max(1, Math.ceil(total / size));
    el.replaceChildren(
      h('button', { type: 'button', class: 'btn btn-ghost btn-sm', disabled: page <= 1, onclick: () => go(page - 1) }, '‹ ' + t('common.prev')),
      h('span', { class: 'pager-info' }, t('common.page', { p: page, n: pages, t: total })),
      h('button', { type: 'button', class: 'btn btn-ghost btn-sm', disabled: page >= pages, onclick: () => go(page + 1) }, t('common.next') + ' ›'));
  }

  // One modal at a time. Buttons with `run` keep the dialog open while it works; a thrown error is shown and
  // the dialog stays, so the operator can fix the input.
  function dialog({ title, body, buttons, wide }) {
    const d = $('#dlg');
    d.classList.toggle('dlg-wide', !!wide);
    $('#dlg-title').textContent = title;
    $('#dlg-body').replaceChildren(body);
    const foot = $('#dlg-foot');
    foot.replaceChildren();
    return new Promise((resolve) => {
      let result = null;
      for (const b of buttons || []) {
        const btn = h('button', { type: 'button', class: 'btn ' + (b.cls || 'btn-ghost'), id: b.id }, b.label);
        btn.addEventListener('click', async () => {
          if (!b.run) { d.close(); return; }
          for (const x of foot.querySelectorAll('button')) x.disabled = true;
          try {
            const r = await b.run();
            if (r !== false) { result = r === undefined ? true : r; d.close(); }
          } catch (e) {
            fail(e);
          } finally {
            for (const x of foot.querySelectorAll('button')) x.disabled = false;
          }
        });
        foot.append(btn);
      }
      d.addEventListener('close', () => resolve(result), { once: true });
      d.showModal();
    });
  }

  function confirmDialog(message, okLabel) {
    return dialog({
      title: t('common.confirm'),
      body: h('p', null, message),
      buttons: [
        { label: t('common.cancel') },
        { label: okLabel || t('common.confirm'), cls: 'btn-danger', id: 'dlg-ok', run: async () => true },
      ],
    });
  }

  function progress() {
    const bar = h('progress', { max: 100, value: 0, class: 'progress', hidden: true });
    const label = h('div', { class: 'progress-label', role: 'status', 'aria-live': 'polite' });
    return {
      el: h('div', null, bar, label),
      set(done, total, text) { bar.hidden = false; bar.max = total || 1; bar.value = done; label.textContent = text; },
      busy(text) { bar.hidden = false; bar.removeAttribute('value'); label.textContent = text; },
      text(s) { label.textContent = s; },
    };
  }

  // Runs `items` through `fn` a few at a time, reporting progress; returns [ok, failed, firstError].
  async function runAll(items, fn, onProgress, width = 4) {
    let done = 0, ok = 0, bad = 0, firstErr = null, next = 0;
    async function worker() {
      while (next < items.length) {
        const it = items[next++];
        try { await fn(it); ok++; } catch (e) { bad++; firstErr = firstErr || e; if (e.status === 401) throw e; }
        onProgress(++done, items.length);
      }
    }
    await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
    return [ok, bad, firstErr];
  }

  const lines = (s) => [...new Set(s.split(/\r?\n/).map((x) => x.trim()).filter(Boolean))];

  // ---------- overview ----------

  const ov = { minutes: 60 };

  async function loadOverview() {
    const bucket = ov.minutes > 60 ? 300 : 60;
    const [tl, stats, px, pl] = await Promise.allSettled([
      api(`/api/logs/timeline?minutes=${ov.minutes}&bucket=${bucket}`),
      api('/api/stats'),
      api('/api/proxies'),
      api('/api/plugins'),
    ]);
    for (const r of [tl, stats]) if (r.status === 'rejected') fail(r.reason);
    const cards = $('#ov-cards');
    $('#ov-chart-title').textContent = t(bucket === 60 ? 'ov.chart' : 'ov.chartDay');
    if (tl.status === 'fulfilled') {
      const d = tl.value.data;
      const rate = d.total ? ((d.success / d.total) * 100).toFixed(1) + '%' : '—';
      const perMin = (d.total / ov.minutes).toFixed(2);
      cards.replaceChildren(
        card(t('ov.requests'), fmtNum(d.total), perMin + ' ' + t('ov.perMin')),
        card(t('ov.successRate'), rate, null, d.total && d.success / d.total < 0.9 ? 'warn' : null),
        card(t('ov.p50'), d.total ? fmtSecs(d.p50_response_time) : '—'),
        card(t('ov.p95'), d.total ? fmtSecs(d.p95_response_time) : '—'));
      drawChart($('#ov-chart'), d);
    }
    const health = [];
    if (stats.status === 'fulfilled') {
      const s = stats.value.data;
      const sum = (k) => (s.normal?.[k] || 0) + (s.super?.[k] || 0);
      health.push(card(t('ov.tokens'), fmtNum(sum('active') + sum('unused')) + ' ' + t('ov.usable'),
        `${sum('limited')} ${t('ov.cooling')} · ${sum('expired')} ${t('ov.expired')}`, sum('expired') ? 'warn' : null));
    }
    if (px.status === 'fulfilled') {
      const list = px.value.data?.proxies || [];
      const good = list.filter((p) => p.healthy).length;
      health.push(card(t('ov.proxies'), `${good} ${t('ov.healthy')}`, `${list.length - good} ${t('ov.unhealthy')}`, list.length - good ? 'warn' : null));
    } else {
      health.push(card(t('ov.proxies'), '—', t('ov.na')));
    }
    if (pl.status === 'fulfilled') {
      const list = pluginList(pl.value.data);
      const loaded = list.filter((p) => p.state === 'loaded').length;
      const failing = list.filter((p) => p.state && p.state !== 'loaded').length;
      health.push(card(t('ov.plugins'), `${loaded} ${t('ov.loaded')}`, `${failing} ${t('ov.failing')}`, failing ? 'bad' : null));
    } else {
      health.push(card(t('ov.plugins'), '—', t('ov.na')));
    }
    $('#ov-health').replaceChildren(...health);
  }


  // Stacked bars (success below, failures above) per bucket and a success-rate line on a 0–100% right axis.
  function drawChart(box, d) {
    const W = Math.max(300, box.clientWidth || 600), H = 240;
    const m = { l: 40, r: 44, t: 12, b: 26 };
    const bs = d.buckets || [];
    const n = Math.max(1, bs.length);
    const max = Math.max(1, ...bs.map((b) => b.total));
    const nice = max <= 4 ? max : Math.ceil(max / 4) * 4;
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const bw = pw / n;
    const y = (v) => m.t + ph - (v / nice) * ph;
    const yr = (p) => m.t + ph - (p / 100) * ph;
    const hhmm = (ms) => { const x = new Date(ms); return String(x.getHours()).padStart(2, '0') + ':' + String(x.getMinutes()).padStart(2, '0'); };
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
      'aria-label': `${t('ov.requests')}: ${d.total}, ${t('ov.successRate')}: ${d.total ? ((d.success / d.total) * 100).toFixed(1) + '%' : '—'}` });
    const grid = s('g', { class: 'grid' });
    for (let i = 0; i <= 4; i++) {
      const v = (nice / 4) * i, yy = y(v);
      grid.append(s('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
      grid.append(s('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end' }, Number.isInteger(v) ? v : v.toFixed(1)));
      grid.append(s('text', { x: W - m.r + 6, y: yr(25 * i) + 4, 'text-anchor': 'start' }, 25 * i + '%'));
    }
    const step = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 70))));
    for (let i = 0; i < n; i += step) {
      grid.append(s('text', { x: m.l + i * bw + bw / 2, y: H - 6, 'text-anchor': 'middle' }, hhmm(bs[i]?.t || d.start)));
    }
    svg.append(grid);
    const bars = s('g');
    const gap = bw > 4 ? 1 : 0;
    bs.forEach((b, i) => {
      if (!b.total) return;
      const x = m.l + i * bw + gap / 2, w = Math.max(1, bw - gap);
      const g = s('g', null, s('title', null, `${hhmm(b.t)} — ${b.total} (${t('ov.legendOk')} ${b.success}, ${t('ov.legendFail')} ${b.total - b.success})`));
      g.append(s('rect', { class: 'bar-ok', x, y: y(b.success), width: w, height: y(0) - y(b.success) }));
      if (b.total > b.success) g.append(s('rect', { class: 'bar-fail', x, y: y(b.total), width: w, height: y(b.success) - y(b.total) }));
      bars.append(g);
    });
    svg.append(bars);
    const pts = bs.map((b, i) => (b.total ? `${(m.l + i * bw + bw / 2).toFixed(1)},${yr((b.success / b.total) * 100).toFixed(1)}` : null)).filter(Boolean);
    if (pts.length > 1) svg.append(s('polyline', { class: 'rate-line', points: pts.join(' ') }));
    for (const p of pts.length === 1 ? pts : []) { const [cx, cy] = p.split(','); svg.append(s('circle', { class: 'rate-dot', cx, cy, r: 3 })); }
    if (!d.total) svg.append(s('text', { class: 'chart-empty', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' }, t('ov.noCalls')));
    box.replaceChildren(svg);
  }

  for (const b of document.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => {
      ov.minutes = +b.dataset.range;
      for (const x of document.querySelectorAll('[data-range]')) x.setAttribute('aria-pressed', String(x === b));
      loadOverview().catch(fail);
    });
  }
  $('#ov-refresh').addEventListener('click', () => loadOverview().catch(fail));

  // ---------- tokens ----------

  const tok = { page: 1, size: 20, selected: new Set(), assignments: {} };

  async function loadTokens() {
    const q = new URLSearchParams({ page: tok.page, page_size: tok.size, sort: 'created_desc' });
    for (const [k, id] of [['token_type', '#tok-type'], ['status', '#tok-status'], ['tag', '#tok-tag']]) {
      if ($(id).value) q.set(k, $(id).value);
    }
    const [list, stats, tags, px] = await Promise.allSettled([
      api('/api/tokens?' + q), api('/api/stats'), api('/api/tokens/tags/all'), api('/api/proxies'),
    ]);
    if (list.status === 'rejected') throw list.reason;
    tok.assignments = px.status === 'fulfilled' ? px.value.data?.assignments || {} : {};
    if (stats.status === 'fulfilled') {
      const d = stats.value.data;
      const sum = (k) => (d.normal?.[k] || 0) + (d.super?.[k] || 0);
      $('#tok-cards').replaceChildren(
        card(t('tok.total'), fmtNum(d.total), `${t('type.sso')} ${d.normal?.total || 0} · ${t('type.ssoSuper')} ${d.super?.total || 0}`),
        card(t('st.正常'), fmtNum(sum('active')), null, 'ok'),
        card(t('st.未使用'), fmtNum(sum('unused'))),
        card(t('st.限流中'), fmtNum(sum('limited')), null, sum('limited') ? 'warn' : null),
        card(t('st.失效'), fmtNum(sum('expired')), null, sum('expired') ? 'bad' : null));
    }
    if (tags.status === 'fulfilled') {
      const sel = $('#tok-tag'), keep = sel.value;
      sel.replaceChildren(h('option', { value: '' }, t('common.all')), ...(tags.value.data || []).map((x) => h('option', { value: x }, x)));
      sel.value = keep;
    }
    renderTokens(list.value);
  }

  function renderTokens(r) {
    const rows = r.data || [];
    const all = h('input', { type: 'checkbox', 'aria-label': t('tok.selectAllPage'),
      checked: rows.length > 0 && rows.every((x) => tok.selected.has(x.token_id)),
      onchange: (e) => { for (const x of rows) e.target.checked ? tok.selected.add(x.token_id) : tok.selected.delete(x.token_id); renderTokens(r); } });
    const cols = [
      { label: all, cls: 'col-check' }, { label: t('tok.token') }, { label: t('tok.type') }, { label: t('tok.status') },
      { label: t('tok.cooldown') }, { label: t('tok.tag') }, { label: t('tok.note') }, { label: t('tok.proxy') },
      { label: t('tok.remaining') }, { label: t('tok.created') }, { label: t('common.actions'), cls: 'col-actions' },
    ];
    table($('#tok-table'), cols, rows.map((x) => ({
      attrs: { 'data-token-id': x.token_id },
      cells: [
        h('input', { type: 'checkbox', 'aria-label': t('tok.select') + ' ' + x.token_id, checked: tok.selected.has(x.token_id),
          onchange: (e) => (e.target.checked ? tok.selected.add(x.token_id) : tok.selected.delete(x.token_id)) }),
        h('div', { class: 'tok-cell' },
          h('code', { class: 'mono' }, x.token),
          h('div', { class: 'tok-id' }, 'ID ', h('code', null, x.token_id),
            h('button', { type: 'button', class: 'icon-btn', title: t('tok.copyId'), 'aria-label': t('tok.copyId'), onclick: () => copy(x.token_id) }, icon('copy')),
            h('button', { type: 'button', class: 'icon-btn', title: t('tok.copyMasked'), 'aria-label': t('tok.copyMasked'), onclick: () => copy(x.token) }, icon('mask')))),
        t('type.' + x.token_type),
        statusBadge(x.status),
        x.cooldown_remaining_ms > 0 ? badge(fmtDur(x.cooldown_remaining_ms), 'warn') : '—',
        h('div', { class: 'chips' }, (x.tags || []).map((g) => h('span', { class: 'chip' }, g))),
        x.note ? h('span', { class: 'note' }, x.note) : '—',
        tok.assignments[x.token_id] ? h('code', { class: 'mono small' }, tok.assignments[x.token_id]) : '—',
        x.remaining_queries < 0 ? '∞' : fmtNum(x.remaining_queries),
        fmtTime(x.created_time),
        h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: (e) => testToken(x, e.target) }, t('tok.test')),
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => editToken(x) }, t('tok.edit')),
          h('button', { type: 'button', class: 'btn btn-danger-ghost btn-sm', onclick: () => deleteTokens([x.token_id], x.token_type) }, t('common.delete'))),
      ],
    })));
    pager($('#tok-pager'), tok.page, tok.size, r.total || 0, (p) => { tok.page = p; loadTokens().catch(fail); });
  }

  async function testToken(x, btn) {
    btn.disabled = true;
    try {
      const r = await api('/api/tokens/test', { method: 'POST', body: { token: x.token_id } });
      toast(`${x.token_id}: ${r.message}`);
    } catch (e) {
      toast(`${x.token_id}: ${e.message}`, 'err');
    } finally {
      btn.disabled = false;
      loadTokens().catch(fail);
    }
  }

  async function deleteTokens(ids, type) {
    if (!ids.length) { toast(t('tok.selectFirst'), 'err'); return; }
    if (!(await confirmDialog(t('tok.confirmDelete', { n: ids.length }), t('common.delete')))) return;
    try {
      const r = await api('/api/tokens/delete', { method: 'POST', body: { tokens: ids, token_type: type || 'sso' } });
      for (const id of ids) tok.selected.delete(id);
      toast(r.message);
      await loadTokens();
    } catch (e) { fail(e); }
  }

  function editToken(x) {
    const tags = h('input', { id: 'edit-tags', value: (x.tags || []).join(', '), 'aria-describedby': 'edit-tags-help' });
    const note = h('textarea', { id: 'edit-note', rows: 3 });
    note.value = x.note || '';
    dialog({
      title: t('tok.editTitle') + ' — ' + x.token_id,
      body: h('div', { class: 'form' },
        h('label', { for: 'edit-tags' }, t('tok.tag')), tags, h('small', { id: 'edit-tags-help', class: 'hint' }, t('tok.tagsHelp')),
        h('label', { for: 'edit-note' }, t('tok.note')), note),
      buttons: [
        { label: t('common.cancel') },
        { label: t('common.save'), cls: 'btn-primary', id: 'edit-save', run: async () => {
          const list = tags.value.split(/[,，]/).map((v) => v.trim()).filter(Boolean);
          await api('/api/tokens/tags', { method: 'POST', body: { token: x.token_id, tags: list } });
          const r = await api('/api/tokens/note', { method: 'POST', body: { token: x.token_id, note: note.value } });
          toast(r.message);
          loadTokens().catch(fail);
        } },
      ],
    });
  }

  // Secrets are typed here and shown masked unless the operator reveals them; nothing typed is kept.
  function addTokens() {
    const type = h('select', { id: 'add-type' }, h('option', { value: 'sso' }, t('type.sso')), h('option', { value: 'ssoSuper' }, t('type.ssoSuper')));
    const area = h('textarea', { id: 'add-tokens', rows: 8, class: 'mono secret', spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'add-help' });
    const reveal = h('input', { type: 'checkbox', id: 'add-reveal', onchange: (e) => area.classList.toggle('secret', !e.target.checked) });
    const prog = progress();
    dialog({
      title: t('tok.add'),
      body: h('div', { class: 'form' },
        h('label', { for: 'add-type' }, t('tok.type')), type,
        h('label', { for: 'add-tokens' }, t('tok.token')), area,
        h('small', { id: 'add-help', class: 'hint' }, t('tok.addHelp')),
        h('label', { class: 'check' }, reveal, t('tok.reveal')),
        prog.el),
      buttons: [
        { label: t('common.cancel') },
        { label: t('tok.add'), cls: 'btn-primary', id: 'add-submit', run: async () => {
          const items = lines(area.value);
          if (!items.length) { toast(t('tok.noInput'), 'err'); return false; }
          const BATCH = 100;
          let added = 0, existing = 0, blank = 0;
          prog.set(0, items.length, t('tok.importing', { d: 0, n: items.length }));
          for (let i = 0; i < items.length; i += BATCH) {
            const r = await api('/api/tokens/add', { method: 'POST', body: { tokens: items.slice(i, i + BATCH), token_type: type.value } });
            added += r.count || 0; existing += r.existing || 0; blank += r.skipped_blank || 0;
            const done = Math.min(items.length, i + BATCH);
            prog.set(done, items.length, t('tok.importing', { d: done, n: items.length }));
          }
          area.value = '';
          toast(t('tok.added', { a: added, e: existing, b: blank }));
          tok.page = 1;
          loadTokens().catch(fail);
        } },
      ],
    });
  }

  $('#tok-add').addEventListener('click', addTokens);
  $('#tok-del-sel').addEventListener('click', () => deleteTokens([...tok.selected]));
  $('#tok-refresh').addEventListener('click', () => loadTokens().catch(fail));
  for (const id of ['#tok-type', '#tok-status', '#tok-tag']) $(id).addEventListener('change', () => { tok.page = 1; loadTokens().catch(fail); });

  // ---------- call log ----------

  const logs = { page: 1, size: 20 };

  function logQuery() {
    const q = new URLSearchParams();
    const sso = $('#log-sso').value.trim();
    if (sso) q.set('sso', sso);
    if ($('#log-success').value) q.set('success', $('#log-success').value);
    if ($('#log-model').value) q.set('model', $('#log-model').value);
    const from = $('#log-from').value, to = $('#log-to').value;
    if (from) q.set('start_time', new Date(from).getTime());
    if (to) q.set('end_time', new Date(to).getTime() + 59_999);
    return q;
  }

  async function loadLogs() {
    const q = logQuery();
    q.set('page', logs.page);
    q.set('page_size', logs.size);
    const [list, stats, models] = await Promise.allSettled([api('/api/logs?' + q), api('/api/logs/stats'), api('/api/logs/models')]);
    if (list.status === 'rejected') throw list.reason;
    if (stats.status === 'fulfilled') {
      const d = stats.value.data;
      $('#log-cards').replaceChildren(
        card(t('log.total'), fmtNum(d.total)), card(t('log.today'), fmtNum(d.today_total)),
        card(t('log.success'), fmtNum(d.success), null, 'ok'), card(t('log.failed'), fmtNum(d.failed), null, d.failed ? 'bad' : null),
        card(t('log.rate'), d.total ? d.success_rate.toFixed(2) + '%' : '—'));
    }
    if (models.status === 'fulfilled') {
      const sel = $('#log-model'), keep = sel.value;
      const names = new Set([...(models.value.data || []), ...(keep ? [keep] : [])]);
      sel.replaceChildren(h('option', { value: '' }, t('common.all')), ...[...names].sort().map((m) => h('option', { value: m }, m)));
      sel.value = keep;
    }
    const rows = list.value.data || [];
    const cols = ['log.time', 'log.token', 'log.model', 'log.status', 'log.code', 'log.took', 'log.proxy', 'log.error'].map((k) => ({ label: t(k) }));
    cols[7].cls = 'col-error';
    table($('#log-table'), cols, rows.map((e) => ({
      attrs: { class: 'clickable', 'data-log-id': e.id, onclick: (ev) => { if (!ev.target.closest('button')) logDetail(e); } },
      cells: [
        h('button', { type: 'button', class: 'link', onclick: () => logDetail(e) }, fmtTime(e.timestamp)),
        h('code', { class: 'mono small', title: e.token_id }, e.sso || e.token_id || '—'),
        e.model || '—',
        e.success ? badge(t('log.ok'), 'ok') : badge(t('log.fail'), 'bad'),
        h('span', { class: e.status_code >= 400 ? 'code-bad' : '' }, e.status_code || '—'),
        fmtSecs(e.response_time),
        e.proxy_used ? h('code', { class: 'mono small', title: e.proxy_used }, e.proxy_used.slice(0, 28)) : t('log.direct'),
        e.error_message ? h('span', { class: 'err-text', title: e.error_message }, e.error_message) : '—',
      ],
    })));
    pager($('#log-pager'), logs.page, logs.size, list.value.total || 0, (p) => { logs.page = p; loadLogs().catch(fail); });
  }

  function logDetail(e) {
    const row = (k, v) => [h('dt', null, t(k)), h('dd', null, v === '' || v === null || v === undefined ? '—' : v)];
    const media = (e.media_urls || []).map((u) => {
      const video = /\.(mp4|webm|mov|m4v|ogv)(\?|#|$)/i.test(u);
      return h('figure', { class: 'media' },
        video ? h('video', { src: u, controls: true, preload: 'metadata' }) : h('img', { src: u, alt: u, loading: 'lazy' }),
        h('figcaption', null, h('a', { href: u, target: '_blank', rel: 'noopener noreferrer' }, u)));
    });
    dialog({
      title: t('log.detail'),
      wide: true,
      body: h('div', null,
        h('dl', { class: 'kv' },
          row('log.time', fmtTime(e.timestamp)), row('log.model', e.model), row('log.route', e.route),
          row('log.status', e.success ? badge(t('log.ok'), 'ok') : badge(t('log.fail'), 'bad')), row('log.code', e.status_code),
          row('log.took', fmtSecs(e.response_time)), row('log.firstByte', e.first_byte_ms != null ? e.first_byte_ms + ' ms' : ''),
          row('log.stream', e.stream ? t('common.yes') : t('common.no')), row('log.retries', e.retries),
          row('log.usage', e.prompt_tokens != null || e.completion_tokens != null ? `${e.prompt_tokens ?? '—'} + ${e.completion_tokens ?? '—'}` : ''),
          row('log.token', h('span', null, h('code', { class: 'mono' }, e.sso || '—'), ' ', h('code', { class: 'mono small' }, e.token_id || ''),
            e.token_id ? h('button', { type: 'button', class: 'icon-btn', 'aria-label': t('tok.copyId'), title: t('tok.copyId'), onclick: () => copy(e.token_id) }, icon('copy')) : null)),
          row('log.proxy', e.proxy_used || t('log.direct')), row('log.client', e.client_ip), row('log.requestId', e.request_id && h('code', { class: 'mono small' }, e.request_id)),
          row('log.error', e.error_message && h('span', null, h('pre', { class: 'err-pre' }, e.error_message),
            h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => copy(e.error_message) }, t('common.copy'))))),
        media.length ? h('div', null, h('h3', null, t('log.media')), h('div', { class: 'media-grid' }, media)) : null),
      buttons: [{ label: t('common.close') }],
    });
  }

  $('#log-filters').addEventListener('submit', (ev) => { ev.preventDefault(); logs.page = 1; loadLogs().catch(fail); });
  $('#log-reset').addEventListener('click', () => {
    for (const id of ['#log-sso', '#log-success', '#log-model', '#log-from', '#log-to']) $(id).value = '';
    logs.page = 1;
    loadLogs().catch(fail);
  });
  $('#log-refresh').addEventListener('click', () => loadLogs().catch(fail));
  $('#log-clear').addEventListener('click', async () => {
    if (!(await confirmDialog(t('log.confirmClear'), t('log.clear')))) return;
    try {
      const r = await api('/api/logs?max_count=0', { method: 'DELETE' });
      toast(r.message);
      logs.page = 1;
      await loadLogs();
    } catch (e) { fail(e); }
  });
  // The export needs the session header, so it is fetched and handed to the browser as a file.
  $('#log-export').addEventListener('click', async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    btn.textContent = t('log.exporting');
    try {
      const q = logQuery();
      q.set('format', 'csv');
      const r = await api('/api/logs/export?' + q, { raw: true });
      const url = URL.createObjectURL(await r.blob());
      const a = h('a', { href: url, download: `call_logs_${Date.now()}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      toast(t('log.exported'));
    } catch (e) { fail(e); } finally {
      btn.disabled = false;
      btn.textContent = t('log.export');
    }
  });

  // ---------- proxies ----------

  const px = { bindPage: 1, search: '', tokenFilter: '', chosen: new Set(), bindProxy: '' };

  async function loadProxies() {
    const body = $('#px-body');
    let r;
    try { r = await api('/api/proxies'); } catch (e) {
      if (isMissing(e)) { body.replaceChildren(unavailable()); return; }
      throw e;
    }
    const toks = await api('/api/tokens?limit=100000&sort=created_desc').catch(() => ({ data: [] }));
    renderProxies(r.data || {}, toks.data || []);
  }

  function renderProxies(d, tokens) {
    const list = [...(d.proxies || [])].reverse();
    const asg = d.assignments || {};
    const good = list.filter((p) => p.healthy).length;
    const masked = Object.fromEntries(tokens.map((x) => [x.token_id, x.token]));

    const addInput = h('input', { id: 'px-url', placeholder: t('px.addPh'), 'aria-label': t('px.url'), autocomplete: 'off', class: 'grow' });
    const addForm = h('form', { class: 'inline-form', onsubmit: async (ev) => {
      ev.preventDefault();
      const url = addInput.value.trim();
      if (!url) return;
      try { const r = await api('/api/proxies', { method: 'POST', body: { url } }); toast(r.message); addInput.value = ''; await loadProxies(); } catch (e) { fail(e); }
    } }, addInput, h('button', { type: 'submit', class: 'btn btn-primary', id: 'px-add' }, t('px.add')));

    const poolProg = progress();
    const toolbar = h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'btn btn-ghost', id: 'px-import', onclick: importProxies }, t('px.import')),
      h('button', { type: 'button', class: 'btn btn-ghost', id: 'px-refresh-pool', onclick: async (ev) => {
        ev.currentTarget.disabled = true;
        poolProg.busy(t('px.refreshing'));
        try { const r = await api('/api/proxies/refresh', { method: 'POST' }); toast(r.message); await loadProxies(); } catch (e) { poolProg.text(e.message); fail(e); } finally { ev.target.disabled = false; }
      } }, t('px.refreshPool')),
      h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => loadProxies().catch(fail) }, t('common.refresh')));

    const listTable = h('table', { class: 'table', id: 'px-table' });
    table(listTable, [
      { label: t('px.url') }, { label: t('px.source') }, { label: t('px.requests') }, { label: t('px.successes') }, { label: t('px.failures') },
      { label: t('px.latency') }, { label: t('px.health') }, { label: t('px.lastError'), cls: 'col-error' }, { label: t('common.actions'), cls: 'col-actions' },
    ], list.map((p) => ({
      attrs: { 'data-proxy': p.url },
      cells: [
        h('code', { class: 'mono small' }, p.url), p.source || '—', fmtNum(p.total_requests), fmtNum(p.success_requests),
        fmtNum(Math.max(0, (p.total_requests || 0) - (p.success_requests || 0))),
        p.ewma_latency_ms != null ? Math.round(p.ewma_latency_ms) + ' ms' : '—',
        p.healthy ? badge(t('px.healthyBadge'), 'ok') : badge(t('px.unhealthyBadge') + (p.fail_count ? ` (${p.fail_count})` : ''), 'bad'),
        p.last_error ? h('span', { class: 'err-text', title: p.last_error }, p.last_error) : '—',
        h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: (ev) => proxyAction('/api/proxies/test', p.url, ev.target) }, t('px.test')),
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: (ev) => proxyAction('/api/proxies/health/reset', p.url, ev.target) }, t('px.reset')),
          h('button', { type: 'button', class: 'btn btn-danger-ghost btn-sm', onclick: async () => {
            if (!(await confirmDialog(t('px.confirmDelete', { u: p.url }), t('common.delete')))) return;
            try { const r = await api('/api/proxies', { method: 'DELETE', body: { url: p.url } }); toast(r.message); await loadProxies(); } catch (e) { fail(e); }
          } }, t('common.delete'))),
      ],
    })));

    // Binding: tokens that are usable and not bound yet, as in Grok2API.
    // The chosen proxy survives re-renders (an import or refresh finishing in the background).
    const proxySel = h('select', { id: 'px-bind-proxy', onchange: (e) => { px.bindProxy = e.target.value; } },
      list.map((p) => h('option', { value: p.url }, p.url + (p.healthy ? '' : ' ⚠'))));
    if (list.some((p) => p.url === px.bindProxy)) proxySel.value = px.bindProxy;
    const candidates = tokens.filter((x) => x.status !== '失效' && !asg[x.token_id]);
    px.chosen = new Set([...px.chosen].filter((id) => candidates.some((x) => x.token_id === id)));
    const tokList = h('div', { class: 'check-list', id: 'px-bind-tokens', role: 'group', 'aria-label': t('px.bind') });
    const drawTokList = () => {
      const f = px.tokenFilter.toLowerCase();
      tokList.replaceChildren(...candidates.filter((x) => !f || x.token_id.includes(f) || x.token.toLowerCase().includes(f) || (x.note || '').toLowerCase().includes(f)).slice(0, 500).map((x) =>
        h('label', { class: 'check' }, h('input', { type: 'checkbox', value: x.token_id, checked: px.chosen.has(x.token_id),
          onchange: (e) => (e.target.checked ? px.chosen.add(x.token_id) : px.chosen.delete(x.token_id)) }),
        h('code', { class: 'mono small' }, x.token_id), h('span', { class: 'muted small' }, x.token), x.note ? h('span', { class: 'small' }, x.note) : null)));
      if (!tokList.children.length) tokList.append(h('p', { class: 'muted' }, t('common.empty')));
    };
    drawTokList();
    const bindProg = progress();
    const bindPanel = h('div', { class: 'panel' }, h('h2', { class: 'panel-title' }, t('px.bind')),
      h('div', { class: 'filters' },
        h('div', { class: 'field' }, h('label', { for: 'px-bind-proxy' }, t('px.bindTo')), proxySel),
        h('div', { class: 'field' }, h('label', { for: 'px-token-filter' }, t('px.tokenFilterPh')),
          h('input', { id: 'px-token-filter', value: px.tokenFilter, oninput: (e) => { px.tokenFilter = e.target.value.trim(); drawTokList(); } })),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => { for (const b of tokList.querySelectorAll('input')) { b.checked = true; px.chosen.add(b.value); } } }, t('common.selectAll')),
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => { px.chosen.clear(); drawTokList(); } }, t('common.clear')))),
      tokList,
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'btn btn-primary', id: 'px-bind', onclick: async (ev) => {
        const ids = [...px.chosen];
        if (!list.length) { toast(t('px.noProxy'), 'err'); return; }
        if (!ids.length) { toast(t('tok.selectFirst'), 'err'); return; }
        ev.target.disabled = true;
        try {
          const [ok, bad, err] = await runAll(ids, (id) => api('/api/proxies/assign', { method: 'POST', body: { proxy_url: proxySel.value, sso: id } }),
            (d, n) => bindProg.set(d, n, t('px.binding', { d, n })));
          bad ? toast(`${t('px.bound', { ok, bad })}: ${err.message}`, 'err') : toast(t('px.bound', { ok, bad }));
          px.chosen.clear();
          await loadProxies();
        } catch (e) { fail(e); } finally { ev.target.disabled = false; }
      } }, t('px.bindBtn'))),
      bindProg.el);

    // Current bindings with a client-side search, 10 per page.
    const bindings = Object.entries(asg).reverse();
    const search = h('input', { id: 'px-search', type: 'search', value: px.search, placeholder: t('px.searchPh'), 'aria-label': t('px.searchPh') });
    const bindTable = h('table', { class: 'table', id: 'px-bindings' });
    const bindPager = h('div', { class: 'pager' });
    const drawBindings = () => {
      const f = px.search.toLowerCase();
      const hits = bindings.filter(([id, u]) => !f || id.toLowerCase().includes(f) || u.toLowerCase().includes(f) || (masked[id] || '').toLowerCase().includes(f));
      const pages = Math.max(1, Math.ceil(hits.length / 10));
      px.bindPage = Math.min(px.bindPage, pages);
      table(bindTable, [{ label: t('tok.token') }, { label: t('px.url') }, { label: t('common.actions'), cls: 'col-actions' }],
        hits.slice((px.bindPage - 1) * 10, px.bindPage * 10).map(([id, u]) => ({
          attrs: { 'data-binding': id },
          cells: [h('span', null, h('code', { class: 'mono small' }, id), ' ', h('span', { class: 'muted small' }, masked[id] || '')), h('code', { class: 'mono small' }, u),
            h('button', { type: 'button', class: 'btn btn-danger-ghost btn-sm', onclick: async () => {
              try { const r = await api('/api/proxies/unassign', { method: 'POST', body: { sso: id } }); toast(r.message); await loadProxies(); } catch (e) { fail(e); }
            } }, t('px.unbind'))],
        })));
      pager(bindPager, px.bindPage, 10, hits.length, (p) => { px.bindPage = p; drawBindings(); });
    };
    search.addEventListener('input', () => { px.search = search.value.trim(); px.bindPage = 1; drawBindings(); });
    drawBindings();

    $('#px-body').replaceChildren(
      h('div', { class: 'cards' }, card(t('px.total'), fmtNum(d.total ?? list.length)), card(t('px.healthy'), fmtNum(good), null, 'ok'),
        card(t('px.unhealthy'), fmtNum(list.length - good), null, list.length - good ? 'bad' : null), card(t('px.bindings'), fmtNum(bindings.length))),
      h('div', { class: 'panel' }, h('h2', { class: 'panel-title' }, t('px.list')), h('div', { class: 'filters' }, addForm, toolbar), poolProg.el,
        h('div', { class: 'table-wrap' }, listTable)),
      bindPanel,
      h('div', { class: 'panel' }, h('h2', { class: 'panel-title' }, t('px.current')), search, h('div', { class: 'table-wrap' }, bindTable), bindPager));
  }

  async function proxyAction(path, url, btn) {
    btn.disabled = true;
    try {
      const r = await api(path, { method: 'POST', body: { url } });
      const extra = r.data && r.data.response_time != null ? ` (${r.data.status_code ?? ''} ${r.data.response_time}s)` : '';
      toast(r.message + extra);
    } catch (e) { fail(e); } finally {
      btn.disabled = false;
      loadProxies().catch(fail);
    }
  }

  function importProxies() {
    const area = h('textarea', { id: 'px-import-text', rows: 8, class: 'mono', spellcheck: 'false', 'aria-describedby': 'px-import-help' });
    const prog = progress();
    dialog({
      title: t('px.import'),
      body: h('div', { class: 'form' }, h('label', { for: 'px-import-text' }, t('px.url')), area,
        h('small', { id: 'px-import-help', class: 'hint' }, t('px.importHelp')), prog.el),
      buttons: [
        { label: t('common.cancel') },
        { label: t('px.import'), cls: 'btn-primary', id: 'px-import-go', run: async () => {
          const items = lines(area.value);
          if (!items.length) return false;
          const [ok, bad, err] = await runAll(items, (url) => api('/api/proxies', { method: 'POST', body: { url } }),
            (d, n) => prog.set(d, n, t('px.importing', { d, n })));
          const msg = t('px.imported', { ok, bad });
          bad ? toast(msg + (err ? ': ' + err.message : ''), 'err') : toast(msg);
          loadProxies().catch(fail);
        } },
      ],
    });
  }

  // ---------- plugins ----------

  // The listing is either an array or {plugins: [...], hooks: {...}}: accept both.
  function pluginList(d) {
    if (Array.isArray(d)) return d;
    if (d && Array.isArray(d.plugins)) return d.plugins;
    return [];
  }

  async function loadPlugins() {
    const body = $('#pl-body');
    let r;
    try { r = await api('/api/plugins'); } catch (e) {
      if (isMissing(e)) { body.replaceChildren(unavailable()); return; }
      throw e;
    }
    renderPlugins(r.data);
  }

  function renderPlugins(d) {
    const list = pluginList(d);
    const STATE_TONE = { loaded: 'ok', failed: 'bad', disabled: 'warn', missing: 'muted' };
    const hooks = new Map();
    if (d && d.hooks && typeof d.hooks === 'object') {
      for (const [k, v] of Object.entries(d.hooks)) hooks.set(k, Array.isArray(v) ? v.join(', ') : v);
    }
    for (const p of list) if (p.hook && p.state === 'loaded' && !hooks.get(p.hook)) hooks.set(p.hook, p.name);
    const us = (v) => (v == null ? '—' : v >= 1000 ? (v / 1000).toFixed(1) + ' ms' : Math.round(v) + ' µs');
    const reloadBtn = h('button', { type: 'button', class: 'btn btn-primary', id: 'pl-reload', onclick: async (ev) => {
      ev.target.disabled = true;
      try { const r = await api('/api/plugins/reload', { method: 'POST' }); toast(r.message || t('pl.reloaded')); renderPlugins(r.data && (r.data.plugins || Array.isArray(r.data)) ? r.data : (await api('/api/plugins')).data); } catch (e) { fail(e); } finally { ev.target.disabled = false; }
    } }, t('pl.reload'));
    const kv = (k, v) => [h('dt', null, t(k)), h('dd', null, v === null || v === undefined || v === '' ? '—' : v)];
    $('#pl-body').replaceChildren(
      h('div', { class: 'toolbar' }, reloadBtn),
      h('div', { class: 'panel' }, h('h2', { class: 'panel-title' }, t('pl.active')),
        hooks.size ? h('dl', { class: 'kv' }, [...hooks].flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v || t('pl.builtin'))])) : h('p', { class: 'muted' }, t('pl.builtin'))),
      list.length ? h('div', { class: 'plugin-grid', id: 'pl-list' }, list.map((p) => {
        const err = p.load_error || (p.state === 'failed' ? p.last_error : null);
        return h('article', { class: 'panel plugin', 'data-plugin': p.name },
          h('header', { class: 'plugin-head' }, h('h3', null, p.name), badge(I18N.zh['pl.st.' + p.state] ? t('pl.st.' + p.state) : p.state || '?', STATE_TONE[p.state] || 'muted')),
          err ? h('div', { class: 'alert', role: 'note' }, h('strong', null, t('pl.loadError') + ': '), err) : null,
          h('dl', { class: 'kv' },
            kv('pl.kind', p.kind), kv('pl.hook', p.hook), kv('pl.file', p.file && h('code', { class: 'mono small' }, p.file)),
            kv('pl.version', p.version), kv('pl.hash', p.sha256 && h('code', { class: 'mono small', title: p.sha256 }, String(p.sha256).slice(0, 16) + '…')),
            kv('pl.loadedAt', fmtTime(p.loaded_at_ms ?? p.loaded_at)), kv('pl.calls', fmtNum(p.calls)), kv('pl.errors', fmtNum(p.errors)),
            kv('pl.p99', `${us(p.p50_us)} / ${us(p.p99_us)}`), kv('pl.lastError', p.last_error && h('span', { class: 'err-text' }, p.last_error))),
          p.state === 'disabled' ? h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: async () => {
            try { await api(`/api/plugins/${encodeURIComponent(p.name)}/enable`, { method: 'POST' }); toast(p.name + ' ✓'); await loadPlugins(); } catch (e) { fail(e); }
          } }, t('pl.enable')) : null);
      })) : h('div', { class: 'panel empty-state' }, t('pl.none')));
  }

  // ---------- settings ----------

  // The API answers the running settings by section and, per key, whether it applies live, whether it is a
  // secret (shown as {set: bool}, never its value) and which environment variable decides it.
  const SECTION_ORDER = ['grok', 'global', 'plugins'];

  async function loadSettings() {
    const body = $('#set-body');
    let r;
    try { r = await api('/api/settings'); } catch (e) {
      if (isMissing(e)) { body.replaceChildren(unavailable()); return; }
      throw e;
    }
    renderSettings(r.data || {}, r.keys || {});
  }

  const isSecretVal = (v) => v && typeof v === 'object' && !Array.isArray(v) && 'set' in v;
  const keyLabel = (sec, key) => { const k = `set.k.${sec}.${key}`; const l = t(k); return l === k ? key : l; };

  function settingInput(id, sec, key, val, meta) {
    if (meta.secret || isSecretVal(val)) {
      return h('input', { id, type: 'password', autocomplete: 'new-password', placeholder: t('set.secret'), 'data-kind': 'secret' });
    }
    if (sec === 'grok' && key === 'allow_direct') {
      const cur = val === true ? 'true' : val === false ? 'false' : 'auto';
      return h('select', { id, 'data-kind': 'direct' }, ...['auto', 'true', 'false'].map((o) => h('option', { value: o, selected: o === cur }, t('set.direct.' + o))));
    }
    if (typeof val === 'boolean') return h('input', { id, type: 'checkbox', checked: val, 'data-kind': 'bool' });
    if (typeof val === 'number') return h('input', { id, type: 'number', step: 'any', value: String(val), inputmode: 'decimal', 'data-kind': 'number' });
    if (Array.isArray(val)) {
      const ta = h('textarea', { id, rows: Math.min(6, Math.max(2, val.length + 1)), class: 'mono', 'data-kind': val.length && val.every((x) => typeof x === 'number') ? 'numbers' : 'list' });
      ta.value = val.join('\n');
      return ta;
    }
    return h('input', { id, value: val ?? '', 'data-kind': 'text', spellcheck: 'false' });
  }

  function inputValue(f) {
    const el = f.input;
    switch (el.dataset.kind) {
      case 'secret': return el.value ? el.value : undefined;
      case 'direct': return el.value === 'auto' ? 'auto' : el.value === 'true';
      case 'bool': return el.checked;
      case 'number': return el.value.trim() === '' ? undefined : Number(el.value);
      case 'numbers': return el.value.split(/[\n,]/).map((x) => x.trim()).filter(Boolean).map(Number);
      case 'list': {
        const items = el.value.split('\n').map((x) => x.trim()).filter(Boolean);
        // An empty list of numbers stays numbers (retry_status_codes).
        return items.length && items.every((x) => /^\d+$/.test(x)) && /codes/.test(f.key) ? items.map(Number) : items;
      }
      default: return el.value;
    }
  }

  function renderSettings(data, keys) {
    const fields = [];
    const secs = Object.keys(data).filter((s) => data[s] && typeof data[s] === 'object' && !Array.isArray(data[s]))
      .sort((a, b) => (SECTION_ORDER.indexOf(a) + 99) % 99 - (SECTION_ORDER.indexOf(b) + 99) % 99);
    const form = h('form', { class: 'settings', id: 'set-form', novalidate: true });
    for (const sec of secs) {
      const title = t('set.sec.' + sec);
      const fs = h('fieldset', { class: 'panel', 'data-section': sec }, h('legend', { class: 'panel-title' }, title === 'set.sec.' + sec ? sec : title));
      for (const [key, val] of Object.entries(data[sec])) {
        const meta = (keys[sec] || {})[key] || { live: true };
        // Nested tables (plugins.config) are edited in setting.toml, where they have their comments.
        if (val && typeof val === 'object' && !Array.isArray(val) && !isSecretVal(val)) {
          fs.append(h('div', { class: 'set-row' }, h('span', { class: 'set-label' }, h('span', {}, keyLabel(sec, key)), h('code', { class: 'set-key' }, `${sec}.${key}`)),
            h('span', { class: 'muted' }, t('set.inFile', { n: Object.keys(val).length }))));
          continue;
        }
        const id = `set-${sec}-${key}`;
        const input = settingInput(id, sec, key, val, meta);
        const notes = [];
        if (!meta.live) notes.push(h('span', { class: 'badge badge-warn', 'data-restart': '' }, t('set.restart')));
        if (meta.secret || isSecretVal(val)) notes.push(h('span', { class: 'badge ' + (val && val.set ? 'badge-ok' : 'badge-muted') }, val && val.set ? t('set.isSet') : t('set.notSet')));
        if (meta.env) { input.disabled = true; notes.push(h('span', { class: 'badge badge-info' }, t('set.env', { v: meta.env }))); }
        const descId = id + '-note';
        if (notes.length) input.setAttribute('aria-describedby', descId);
        fields.push({ sec, key, val, input, meta });
        fs.append(h('div', { class: 'set-row' + (input.dataset.kind === 'bool' ? ' set-bool' : ''), 'data-key': `${sec}.${key}` },
          h('label', { for: id, class: 'set-label' }, h('span', {}, keyLabel(sec, key)), h('code', { class: 'set-key' }, `${sec}.${key}`)),
          h('div', { class: 'set-control' }, input, notes.length ? h('div', { class: 'set-notes', id: descId }, notes) : null)));
      }
      form.append(fs);
    }
    const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'set-save' }, t('set.save'));
    const status = h('p', { id: 'set-status', class: 'set-status', role: 'status', 'aria-live': 'polite' });
    form.append(h('div', { class: 'actions sticky-actions' }, saveBtn, status));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
      const body = {};
      for (const f of fields) {
        if (f.input.disabled) continue;
        const v = inputValue(f);
        if (v === undefined) continue;
        if (!isSecretVal(f.val) && JSON.stringify(v) === JSON.stringify(f.val)) continue;
        (body[f.sec] ||= {})[f.key] = v;
      }
      if (!Object.keys(body).length) { status.textContent = t('set.noChange'); toast(t('set.noChange')); return; }
      saveBtn.disabled = true;
      try {
        const r = await api('/api/settings', { method: 'POST', body });
        const restart = (r.data && r.data.restart_required) || [];
        const msg = restart.length ? t('set.savedRestart', { keys: restart.join(', ') }) : t('set.saved');
        toast(msg, restart.length ? 'warn' : 'ok');
        await loadSettings();
        $('#set-status').textContent = msg;
      } catch (e) {
        const key = e.body && e.body.error && e.body.error.param;
        const el = key && document.getElementById('set-' + key.replace('.', '-'));
        if (el) { el.setAttribute('aria-invalid', 'true'); el.focus(); }
        status.textContent = e.message || t('err.failed');
        fail(e);
      } finally { saveBtn.disabled = false; }
    });
    $('#set-body').replaceChildren(h('p', { class: 'hint' }, t('set.help')), secs.length ? form : h('div', { class: 'panel empty-state' }, t('common.empty')));
  }

  // ---------- shell: tabs, language, refresh ----------

  const LOADERS = { overview: loadOverview, tokens: loadTokens, logs: loadLogs, proxies: loadProxies, plugins: loadPlugins, settings: loadSettings };
  // Pages whose numbers move on their own refresh while shown (not while a dialog is open).
  const AUTO = { overview: 30_000, tokens: 30_000 };

  function show(name) {
    if (!TABS.includes(name)) name = 'overview';
    current = name;
    for (const tab of document.querySelectorAll('[role=tab]')) {
      const on = tab.dataset.tab === name;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
    }
    for (const n of TABS) $('#page-' + n).hidden = n !== name;
    clearInterval(timer);
    LOADERS[name]().catch(fail);
    if (AUTO[name]) timer = setInterval(() => { if (!$('#dlg').open && !document.hidden) LOADERS[name]().catch(fail); }, AUTO[name]);
  }

  const tabs = [...document.querySelectorAll('[role=tab]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => { location.hash = tab.dataset.tab; });
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      const j = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (j === undefined) return;
      e.preventDefault();
      const next = tabs[(j + tabs.length) % tabs.length];
      next.focus();
      location.hash = next.dataset.tab;
    });
  }
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));

  const langSel = $('#lang');
  langSel.value = UI.lang();
  langSel.addEventListener('change', () => { UI.setLang(langSel.value); show(current); });

  $('#logout').addEventListener('click', async () => {
    try { await api('/api/logout', { method: 'POST', noRedirect: true }); } catch { /* leaving anyway */ }
    session.clear();
    location.href = '/login';
  });

  let resizeT;
  window.addEventListener('resize', () => { clearTimeout(resizeT); resizeT = setTimeout(() => { if (current === 'overview') loadOverview().catch(fail); }, 200); });

  if (!session.get()) { location.replace('/login'); return; }
  UI.applyI18n();
  api('/api/storage/mode').then((r) => { const b = $('#storage-badge'); b.textContent = t('storage') + ': ' + r.data.mode; b.hidden = false; }).catch(() => {});
  show(location.hash.slice(1) || 'overview');
})();
