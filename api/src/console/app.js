// Tripline's built-in console. Plain JavaScript, no dependencies, no build step.
//
// Everything shown comes from Tripline's API with the bearer token the user typed (kept in
// sessionStorage for this tab only). Values from the API are always put on the page as text
// (textContent, text nodes, attributes set one by one), never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'tripline.api_token';
  const REFRESH_MS = 10000;
  const CHART_REFRESH_MS = 60000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STATE_ORDER = { firing: 0, flapping: 1, pending: 2, resolved: 3 };
  const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
  const SILENCE_ORDER = { active: 0, pending: 1, expired: 2 };

  const $ = (id) => document.getElementById(id);
  let chartKey = null;
  let timers = [];
  let last = { alerts: null, silences: null };

  class AuthError extends Error {}

  // ---- small DOM helpers (text only) --------------------------------------------------------

  function el(tag, className, ...children) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function show(id, visible) {
    $(id).classList.toggle('hidden', !visible);
  }

  function showError(message) {
    $('error').textContent = message || '';
    show('error', Boolean(message));
  }

  function badge(text, kind) {
    return el('span', 'badge ' + kind + '-' + String(text).replace(/[^a-z_]/g, ''), text);
  }

  function time(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
  }

  function hhmm(ms) {
    return new Date(ms).toISOString().slice(11, 16);
  }

  function usd(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '';
    const a = Math.abs(v);
    return '$' + (a >= 100 ? v.toFixed(0) : a >= 0.01 || a === 0 ? v.toFixed(2) : v.toPrecision(2));
  }

  function num(v) {
    return Number.isFinite(v) ? String(Number(v.toPrecision(4))) : '';
  }

  function count(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '';
    return Math.abs(v) >= 10 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1);
  }

  // ---- API ----------------------------------------------------------------------------------

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      signedOut('');
      throw new AuthError();
    }
    const headers = { Authorization: 'Bearer ' + token };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (res.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      signedOut('The token was refused (401 Unauthorized). Enter it again.');
      throw new AuthError();
    }
    if (!res.ok) {
      throw new Error((data && data.error) || method + ' ' + path + ': HTTP ' + res.status);
    }
    return data;
  }

  // Runs an action; reports failures other than a refused token (which shows the login).
  async function attempt(action) {
    try {
      await action();
      return true;
    } catch (e) {
      if (!(e instanceof AuthError)) showError(e.message || String(e));
      return false;
    }
  }

  // ---- signing in and out -------------------------------------------------------------------

  function clearData() {
    for (const id of ['alerts', 'silences', 'findings']) {
      $(id).tBodies[0].replaceChildren();
    }
    $('spend-chart-box').replaceChildren();
    $('requests-chart-box').replaceChildren();
    last = { alerts: null, silences: null };
  }

  function signedOut(message) {
    for (const t of timers) clearInterval(t);
    timers = [];
    clearData();
    show('app', false);
    show('chart', false);
    show('refresh', false);
    show('sign-out', false);
    showError('');
    show('login', true);
    $('token-error').textContent = message || '';
    show('token-error', Boolean(message));
    $('status').textContent = 'not signed in';
    $('token').focus();
  }

  async function signedIn() {
    show('login', false);
    show('token-error', false);
    const ok = await attempt(refresh);
    if (!ok && !sessionStorage.getItem(TOKEN_KEY)) return;
    show('app', true);
    show('refresh', true);
    show('sign-out', true);
    const m = /^#key=(.+)$/.exec(location.hash);
    if (m) await openChart(decodeURIComponent(m[1]));
    timers.push(setInterval(() => attempt(refresh), REFRESH_MS));
    timers.push(setInterval(() => chartKey && attempt(drawChart), CHART_REFRESH_MS));
  }

  // ---- alerts -------------------------------------------------------------------------------

  async function refresh() {
    const [alerts, silences] = await Promise.all([
      api('GET', '/api/v1/alerts'),
      api('GET', '/api/v1/silences'),
    ]);
    showError('');
    // Re-render only what changed, so the page does not flicker (or lose a click) every 10 s.
    const a = JSON.stringify(alerts);
    if (a !== last.alerts) {
      last.alerts = a;
      renderAlerts(alerts);
    }
    const s = JSON.stringify(silences);
    if (s !== last.silences) {
      last.silences = s;
      renderSilences(silences);
    }
    const firing = alerts.filter((x) => x.state === 'firing').length;
    $('status').textContent =
      'signed in · ' + firing + ' firing · updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
  }

  function renderAlerts(alerts) {
    alerts.sort(
      (x, y) =>
        (STATE_ORDER[x.state] ?? 9) - (STATE_ORDER[y.state] ?? 9) ||
        (SEVERITY_ORDER[x.severity] ?? 9) - (SEVERITY_ORDER[y.severity] ?? 9) ||
        String(y.starts_at).localeCompare(String(x.starts_at)),
    );
    const body = $('alerts').tBodies[0];
    body.replaceChildren();
    for (const a of alerts) {
      const labels = el('td', 'labels');
      for (const [k, v] of Object.entries(a.labels || {})) {
        labels.append(el('span', 'label', k + '=' + v), ' ');
      }
      const muted = el('td', 'muted-by');
      for (const id of a.silenced_by || []) muted.append(el('div', 'silenced', 'silenced by ' + id));
      if (a.inhibited_by) muted.append(el('div', 'inhibited', 'inhibited by ' + a.inhibited_by));
      const actions = el('td', 'actions');
      const key = a.labels && a.labels.api_key_id;
      if (key) {
        const chart = el('button', 'show-chart', 'Chart');
        chart.type = 'button';
        chart.addEventListener('click', () => attempt(() => openChart(key)));
        actions.append(chart, ' ');
      }
      const silence = el('button', 'silence-alert', 'Silence…');
      silence.type = 'button';
      silence.addEventListener('click', () => prefillSilence(a.labels || {}));
      actions.append(silence);
      const row = el(
        'tr',
        'alert state-' + a.state,
        el('td', null, badge(a.state, 'state')),
        el('td', null, badge(a.severity, 'sev')),
        labels,
        el('td', 'summary', a.summary),
        el('td', 'time', time(a.starts_at)),
        muted,
        actions,
      );
      row.dataset.fingerprint = a.fingerprint;
      row.dataset.state = a.state;
      if (key) {
        row.dataset.key = key;
        row.classList.add('clickable');
        row.addEventListener('click', (ev) => {
          if (ev.target.closest('button')) return;
          attempt(() => openChart(key));
        });
      }
      body.append(row);
    }
    show('alerts-empty', alerts.length === 0);
  }

  // ---- silences -----------------------------------------------------------------------------

  function quote(value) {
    return '"' + String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
  }

  function prefillSilence(labels) {
    const lines = labels.api_key_id
      ? ['api_key_id=' + quote(labels.api_key_id)]
      : Object.entries(labels).map(([k, v]) => k + '=' + quote(v));
    $('silence-matchers').value = lines.join('\n');
    $('silence-created-by').focus();
    $('silence-form').scrollIntoView({ block: 'center' });
  }

  function renderSilences(silences) {
    silences.sort(
      (x, y) =>
        (SILENCE_ORDER[x.state] ?? 9) - (SILENCE_ORDER[y.state] ?? 9) ||
        String(y.ends_at).localeCompare(String(x.ends_at)),
    );
    const body = $('silences').tBodies[0];
    body.replaceChildren();
    for (const s of silences) {
      const matchers = el('td', 'matchers');
      for (const m of s.matchers || []) matchers.append(el('code', null, m), ' ');
      const actions = el('td', 'actions');
      if (s.state !== 'expired') {
        const expire = el('button', 'expire', 'Expire');
        expire.type = 'button';
        expire.addEventListener('click', () =>
          attempt(async () => {
            expire.disabled = true;
            await api('DELETE', '/api/v1/silences/' + encodeURIComponent(s.id));
            await refresh();
          }),
        );
        actions.append(expire);
      }
      const row = el(
        'tr',
        'silence state-' + s.state,
        el('td', null, badge(s.state, 'state')),
        matchers,
        el('td', 'time', time(s.starts_at)),
        el('td', 'time', time(s.ends_at)),
        el('td', null, s.created_by),
        el('td', 'comment', s.comment),
        actions,
      );
      row.dataset.id = s.id;
      row.dataset.state = s.state;
      body.append(row);
    }
    show('silences-empty', silences.length === 0);
  }

  async function createSilence(ev) {
    ev.preventDefault();
    const matchers = $('silence-matchers')
      .value.split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
    const submit = $('silence-submit');
    submit.disabled = true;
    const ok = await attempt(async () => {
      await api('POST', '/api/v1/silences', {
        matchers,
        duration_s: Number($('silence-duration').value),
        created_by: $('silence-created-by').value.trim(),
        comment: $('silence-comment').value.trim(),
      });
      await refresh();
    });
    submit.disabled = false;
    if (ok) {
      $('silence-matchers').value = '';
      $('silence-comment').value = '';
    }
  }

  // ---- charts -------------------------------------------------------------------------------

  async function openChart(key) {
    chartKey = key;
    history.replaceState(null, '', '#key=' + encodeURIComponent(key));
    $('chart-key').textContent = key;
    show('chart', true);
    await drawChart();
    $('chart').scrollIntoView({ block: 'start' });
  }

  async function drawChart() {
    const key = chartKey;
    const rangeS = Number($('chart-range').value);
    const to = Math.ceil(Date.now() / 60000) * 60;
    const data = await api(
      'GET',
      '/api/v1/keys/' + encodeURIComponent(key) + '/series?from=' + (to - rangeS) + '&to=' + to,
    );
    if (key !== chartKey) return;
    $('chart-project').textContent = data.project ? 'project ' + data.project : '';
    const findings = data.findings || [];
    plot('spend', data.spend_usd, findings, usd, true);
    plot('requests', data.requests, findings, count, false);
    $('spend-band-note').textContent = 'Band: ' + data.spend_usd.band;
    $('requests-band-note').textContent = 'Band: ' + data.requests.band;
    renderFindings(findings);
  }

  function renderFindings(findings) {
    const body = $('findings').tBodies[0];
    body.replaceChildren();
    for (const f of findings.slice().reverse()) {
      const row = el(
        'tr',
        'finding-row',
        el('td', 'time', time(f.emitted_at)),
        el('td', null, f.detector),
        el('td', null, badge(f.status, 'state')),
        el('td', null, badge(f.severity, 'sev')),
        el('td', 'time', hhmm(Date.parse(f.window_start)) + '–' + hhmm(Date.parse(f.window_end))),
        el('td', 'num', num(f.observed)),
        el('td', 'num', num(f.expected)),
        el('td', 'num', num(f.upper)),
        el('td', 'summary', f.summary),
      );
      body.append(row);
    }
    show('findings-empty', findings.length === 0);
  }

  // One chart: the band shaded where the model had one, the expectation dashed, the observed
  // line, and the findings marked (a line at their window; on the spend chart a dot at the
  // spend the detector saw, for per-minute spend findings).
  function plot(name, series, findings, format, markValues) {
    const box = $(name + '-chart-box');
    const points = series.points.map((p) => ({ ...p, t: Date.parse(p.minute) }));
    const W = 960;
    const H = 240;
    const M = { left: 70, right: 14, top: 12, bottom: 26 };
    const chart = svg('svg', {
      id: name + '-chart',
      class: 'chart',
      viewBox: '0 0 ' + W + ' ' + H,
      role: 'img',
    });
    chart.append(svg('title', {}, name + ' per minute'));
    if (points.length === 0) {
      box.replaceChildren(chart);
      return;
    }
    const t0 = points[0].t;
    const t1 = points[points.length - 1].t + 60000;
    const spendFindings = findings.filter(
      (f) =>
        markValues &&
        f.status === 'firing' &&
        f.detector === 'spend_spike' &&
        Date.parse(f.window_end) - Date.parse(f.window_start) === 60000,
    );
    let dataMax = 0;
    for (const p of points) dataMax = Math.max(dataMax, p.value, p.upper ?? 0);
    for (const f of spendFindings) dataMax = Math.max(dataMax, f.observed);
    if (!(dataMax > 0)) dataMax = 1;
    // Log scale (the default): log10(1 + v / unit), so zero stays at the bottom and a spike
    // 400 times the usual level does not flatten the band into a line.
    const log = $('chart-scale').value === 'log';
    let unit = dataMax / 100;
    for (const p of points) {
      for (const v of [p.value, p.expected]) if (v > 0 && v < unit) unit = v;
    }
    unit = Math.max(unit, dataMax / 1e6);
    const scale = log ? (v) => Math.log10(1 + Math.max(v, 0) / unit) : (v) => Math.max(v, 0);
    const top = scale(dataMax) * 1.08;
    const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
    const y = (v) => H - M.bottom - (scale(v) / top) * (H - M.top - M.bottom);
    const mid = (p) => x(p.t + 30000);
    const f2 = (n) => n.toFixed(2);

    // Axes and grid: 0, the maximum, and between them halves (linear) or powers of ten (log),
    // leaving out labels that would overlap.
    let ticks = [0, dataMax / 2, dataMax];
    if (log) {
      ticks = [0];
      for (let p = Math.pow(10, Math.floor(Math.log10(unit))); p < dataMax; p *= 10) ticks.push(p);
      ticks.push(dataMax);
    }
    let lastY = -Infinity;
    for (const v of ticks.sort((a, b) => b - a)) {
      const ty = y(v);
      if (ty - lastY < 14) continue;
      lastY = ty;
      chart.append(svg('line', { class: 'grid', x1: M.left, x2: W - M.right, y1: f2(ty), y2: f2(ty) }));
      chart.append(svg('text', { class: 'axis', x: M.left - 6, y: f2(ty + 4), 'text-anchor': 'end' }, format(v)));
    }
    const spanMin = (t1 - t0) / 60000;
    const stepMin = [5, 10, 15, 30, 60, 120, 180].find((s) => spanMin / s <= 10) || 240;
    for (let t = Math.ceil(t0 / (stepMin * 60000)) * stepMin * 60000; t <= t1; t += stepMin * 60000) {
      chart.append(svg('line', { class: 'tick', x1: f2(x(t)), x2: f2(x(t)), y1: H - M.bottom, y2: H - M.bottom + 4 }));
      chart.append(svg('text', { class: 'axis', x: f2(x(t)), y: H - 8, 'text-anchor': 'middle' }, hhmm(t)));
    }

    // The band, in runs of minutes that have one.
    let band = '';
    let expected = '';
    let run = [];
    const flush = () => {
      if (run.length > 0) {
        const up = run.map((p, i) => (i ? 'L' : 'M') + f2(mid(p)) + ' ' + f2(y(p.upper)));
        const down = run.slice().reverse().map((p) => 'L' + f2(mid(p)) + ' ' + f2(y(p.lower)));
        band += up.join(' ') + ' ' + down.join(' ') + ' Z ';
        expected += run.map((p, i) => (i ? 'L' : 'M') + f2(mid(p)) + ' ' + f2(y(p.expected))).join(' ') + ' ';
      }
      run = [];
    };
    for (const p of points) {
      if (p.upper === null || p.upper === undefined) flush();
      else run.push(p);
    }
    flush();
    if (band) chart.append(svg('path', { class: 'band', d: band.trim() }));
    if (expected) chart.append(svg('path', { class: 'expected', d: expected.trim() }));
    const line = points.map((p, i) => (i ? 'L' : 'M') + f2(mid(p)) + ' ' + f2(y(p.value))).join(' ');
    chart.append(svg('path', { class: 'series', d: line }));

    // Findings.
    for (const f of findings) {
      const ws = Date.parse(f.window_start);
      const at = Math.min(Math.max(ws, t0), t1);
      if (Date.parse(f.window_end) < t0 || ws > t1) continue;
      const lineX = f2(ws >= t0 ? x(ws + 30000) : x(at));
      const mark = svg('line', {
        class: 'finding-line ' + (f.status === 'firing' ? 'firing' : 'resolved'),
        x1: lineX,
        x2: lineX,
        y1: M.top,
        y2: H - M.bottom,
      });
      mark.append(svg('title', {}, f.status + ' ' + f.detector + ': ' + f.summary));
      chart.append(mark);
    }
    for (const f of spendFindings) {
      const ws = Date.parse(f.window_start);
      if (ws < t0 || ws >= t1) continue;
      const dot = svg('circle', {
        class: 'finding severity-' + f.severity,
        cx: f2(x(ws + 30000)),
        cy: f2(y(f.observed)),
        r: 5,
        'data-observed': f.observed,
        'data-expected': f.expected,
        'data-upper': f.upper,
        'data-minute': f.window_start,
      });
      dot.append(svg('title', {}, f.summary));
      chart.append(dot);
    }

    const peak = points.reduce((a, b) => (b.value > a.value ? b : a), points[0]);
    $(name + '-peak').textContent =
      'max ' + format(peak.value) + ' at ' + hhmm(peak.t) + ' UTC';
    $(name + '-peak').dataset.value = peak.value;
    box.replaceChildren(chart);
  }

  // ---- wiring -------------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      signedIn();
    });
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      chartKey = null;
      history.replaceState(null, '', location.pathname);
      signedOut('');
    });
    $('refresh').addEventListener('click', () =>
      attempt(async () => {
        await refresh();
        if (chartKey) await drawChart();
      }),
    );
    $('chart-range').addEventListener('change', () => chartKey && attempt(drawChart));
    $('chart-scale').addEventListener('change', () => chartKey && attempt(drawChart));
    $('silence-form').addEventListener('submit', createSilence);
    if (sessionStorage.getItem(TOKEN_KEY)) signedIn();
    else signedOut('');
  });
})();
