// Admin page script: plain browser JavaScript, no build step, no third-party code, no network
// access beyond this server. The statechart is drawn from /admin/api/machine, which the server
// derives from the XState definition and lays out with elkjs; this script only draws and colours it.
//
// Performance: all sections live in one Map; the visible list is re-filtered and re-sorted at most
// once per animation frame, and only the rows in view exist in the DOM (a small pool of row
// elements is reused as the list scrolls). The live feed already arrives coalesced (one message per
// ~200 ms with the latest row of each changed section).

const ROW_H = 30;
const OVERSCAN = 8;
const TOKEN_KEY = 'enrollment.admin.token';
const SVG_NS = 'http://www.w3.org/2000/svg';
const RESYNC_MS = 60_000;

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  /** key "course/group" -> row */
  rows: new Map(),
  /** rows after filter and sort */
  view: [],
  departments: [],
  selected: null,
  detail: null,
  layout: null,
  shownState: null,
  filter: { q: '', dept: '', sort: 'busy' },
};

// ---------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, code, reason) {
    super(reason);
    this.status = status;
    this.code = code;
  }
}

async function api(method, url, body) {
  const headers = {};
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'NETWORK', 'the server cannot be reached');
  }
  let data = null;
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) data = await res.json().catch(() => null);
  else if (res.status !== 204) data = await res.text();
  if (!res.ok) {
    const err = new ApiError(res.status, data?.code ?? String(res.status), data?.reason ?? res.statusText);
    // A session that ended (or was never staff) sends the user back to the login form.
    if (state.token && (res.status === 401 || err.code === 'FORBIDDEN')) {
      logout(res.status === 401 ? 'Your session has ended; log in again.' : 'This page is for staff only.');
    }
    throw err;
  }
  return data;
}

/** The role claim of a JWT, read without verifying it (the server verifies every request). */
function tokenRole(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part)).role ?? null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Login

function showLogin(message) {
  $('app-view').hidden = true;
  $('login-view').hidden = false;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login-error').textContent = message || '';
  $('login-user').focus();
}

function logout(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  feed.stop();
  showLogin(message);
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  const errorEl = $('login-error');
  errorEl.textContent = '';
  if (!/^[0-9]{1,10}$/.test(user) || password === '') {
    errorEl.textContent = 'Enter your numeric staff id and your password.';
    return;
  }
  $('login-submit').disabled = true;
  try {
    const res = await fetch('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user, password, staff: true }),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      errorEl.textContent = `Login refused: ${data.reason || res.statusText}`;
      return;
    }
    if (tokenRole(data.token) !== 'staff') {
      errorEl.textContent = 'Login refused: this page is for staff only.';
      return;
    }
    state.token = data.token;
    sessionStorage.setItem(TOKEN_KEY, data.token);
    $('login-password').value = '';
    await start();
  } catch {
    errorEl.textContent = 'Login failed: the server cannot be reached.';
  } finally {
    $('login-submit').disabled = false;
  }
});

$('logout').addEventListener('click', () => logout(''));

// ---------------------------------------------------------------------------------------------
// Sections: data, filter, sort

const keyOf = (r) => `${r.course_id}/${r.group_id}`;

/** Keeps the newest version of each row (the feed and the list can cross in flight). */
function upsert(row) {
  const key = keyOf(row);
  const old = state.rows.get(key);
  if (old && old.seq > row.seq) return false;
  row.key = key;
  row.lname = row.name.toLowerCase();
  row.llect = row.lecturer.toLowerCase();
  row.fill = row.capacity > 0 ? row.registered_count / row.capacity : 1;
  state.rows.set(key, row);
  if (key === state.selected) {
    schedule('detail');
    if (!old || old.seq !== row.seq) detailLoader.request();
  }
  return true;
}

async function loadList() {
  const data = await api('GET', '/admin/api/sections');
  for (const r of data.sections) upsert(r);
  if (data.departments.length !== state.departments.length) {
    state.departments = data.departments.slice().sort((a, b) => a.id - b.id);
    const sel = $('department');
    const current = sel.value;
    sel.replaceChildren(new Option('All departments', ''));
    for (const d of state.departments) sel.append(new Option(`${d.name} (${d.id})`, String(d.id)));
    sel.value = current;
  }
  schedule('view');
}

const SORTS = {
  busy: (a, b) => b.fill - a.fill || b.reserved_count - a.reserved_count || a.course_id - b.course_id || a.group_id - b.group_id,
  queue: (a, b) => b.reserved_count - a.reserved_count || b.fill - a.fill || a.course_id - b.course_id || a.group_id - b.group_id,
  id: (a, b) => a.course_id - b.course_id || a.group_id - b.group_id,
};

function recomputeView() {
  const q = state.filter.q;
  const dept = state.filter.dept === '' ? null : Number(state.filter.dept);
  const out = [];
  for (const r of state.rows.values()) {
    if (dept !== null && r.department !== dept) continue;
    if (q && !(r.lname.includes(q) || r.llect.includes(q) || String(r.course_id).includes(q) || r.key === q)) continue;
    out.push(r);
  }
  out.sort(SORTS[state.filter.sort] || SORTS.busy);
  state.view = out;
  $('count').textContent = `${out.length} of ${state.rows.size} sections`;
}

$('search').addEventListener('input', (e) => {
  state.filter.q = e.target.value.trim().toLowerCase();
  schedule('view');
});
$('department').addEventListener('change', (e) => {
  state.filter.dept = e.target.value;
  schedule('view');
});
$('sort').addEventListener('change', (e) => {
  state.filter.sort = e.target.value;
  schedule('view');
});

// ---------------------------------------------------------------------------------------------
// Rendering, batched per animation frame

const dirty = { view: false, rows: false, detail: false };
let frameRequested = false;

function schedule(what) {
  dirty[what] = true;
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(frame);
  }
}

function frame() {
  frameRequested = false;
  const { view, rows, detail } = dirty;
  dirty.view = dirty.rows = dirty.detail = false;
  if (view) recomputeView();
  if (view || rows) renderRows();
  if (detail) renderDetail();
}

const listEl = $('list');
const spacerEl = $('list-spacer');
const pool = [];

function makeRow() {
  const el = document.createElement('div');
  el.className = 'row';
  el.setAttribute('role', 'option');
  const id = document.createElement('span');
  id.className = 'r-id';
  const name = document.createElement('span');
  name.className = 'r-name';
  const nameText = document.createTextNode('');
  const lect = document.createElement('span');
  lect.className = 'r-lect';
  name.append(nameText, lect);
  const seats = document.createElement('span');
  seats.className = 'r-seats';
  const bar = document.createElement('span');
  bar.className = 'r-bar';
  const fill = document.createElement('span');
  fill.className = 'r-fill';
  bar.append(fill);
  const num = document.createElement('span');
  num.className = 'r-num';
  seats.append(bar, num);
  const q = document.createElement('span');
  q.className = 'r-q';
  const st = document.createElement('span');
  st.className = 'badge';
  el.append(id, name, seats, q, st);
  el.parts = { id, nameText, lect, fill, num, q, st };
  el.sig = '';
  listEl.append(el);
  return el;
}

/** The state's last path segment names its colour: seatsAvailable, reserveOnly, full, closed. */
const stateKey = (s) => s.split('.').pop();

function renderRows() {
  const n = state.view.length;
  spacerEl.style.height = `${n * ROW_H}px`;
  const top = listEl.scrollTop;
  const height = listEl.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const last = Math.min(n, Math.ceil((top + height) / ROW_H) + OVERSCAN);
  while (pool.length < last - first) pool.push(makeRow());
  for (let i = 0; i < pool.length; i += 1) {
    const el = pool[i];
    const idx = first + i;
    if (idx >= last) {
      if (!el.hidden) el.hidden = true;
      continue;
    }
    const r = state.view[idx];
    el.hidden = false;
    el.style.transform = `translateY(${idx * ROW_H}px)`;
    const selected = r.key === state.selected;
    const sig = `${r.key}|${r.seq}|${selected}`;
    if (el.sig === sig) continue;
    el.sig = sig;
    const p = el.parts;
    el.dataset.key = r.key;
    el.setAttribute('aria-selected', String(selected));
    p.id.textContent = r.key;
    p.nameText.data = r.name;
    p.lect.textContent = r.lecturer;
    const sk = stateKey(r.state);
    el.className = `row fill-${sk}`;
    p.fill.style.transform = `scaleX(${Math.min(1, r.fill)})`;
    p.num.textContent = `${r.registered_count}/${r.capacity}`;
    p.q.textContent = `${r.reserved_count}/${r.reserve_capacity}`;
    p.st.className = `badge st-${sk}`;
    p.st.textContent = sk;
    el.title = `${r.name} — ${r.lecturer}\n${r.state}${r.sex_lock ? `, ${r.sex_lock} only` : ''}${r.closed ? ', closed' : ''}`;
  }
}

listEl.addEventListener('scroll', () => schedule('rows'), { passive: true });
window.addEventListener('resize', () => schedule('rows'));
listEl.addEventListener('click', (e) => {
  const row = e.target.closest('.row');
  if (row && row.dataset.key) select(row.dataset.key);
});
listEl.addEventListener('keydown', (e) => {
  if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
  e.preventDefault();
  const i = state.view.findIndex((r) => r.key === state.selected);
  const next = state.view[Math.max(0, Math.min(state.view.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
  if (!next) return;
  select(next.key);
  const idx = state.view.indexOf(next);
  if (idx * ROW_H < listEl.scrollTop) listEl.scrollTop = idx * ROW_H;
  else if ((idx + 1) * ROW_H > listEl.scrollTop + listEl.clientHeight) listEl.scrollTop = (idx + 1) * ROW_H - listEl.clientHeight;
});

// ---------------------------------------------------------------------------------------------
// Selected section

function select(key) {
  if (state.selected === key) return;
  state.selected = key;
  state.detail = null;
  state.shownState = null;
  history.replaceState(null, '', `#${key}`);
  $('a-result').textContent = '';
  $('a-capacity').dataset.shown = '';
  schedule('rows');
  schedule('detail');
  detailLoader.request();
}

/** Fetches the selected section's members and transitions; never more than one request at a time. */
const detailLoader = {
  busy: false,
  again: false,
  async request() {
    if (this.busy) {
      this.again = true;
      return;
    }
    const key = state.selected;
    if (!key) return;
    this.busy = true;
    try {
      const data = await api('GET', `/admin/api/sections/${key}?limit=30`);
      if (key === state.selected) {
        state.detail = data;
        upsert(data.section);
        schedule('detail');
      }
    } catch (err) {
      if (key === state.selected) showResult(false, `Could not load the section: ${err.message}`);
    } finally {
      this.busy = false;
      if (this.again) {
        this.again = false;
        setTimeout(() => this.request(), 150);
      }
    }
  },
};

function setText(id, text) {
  const el = $(id);
  if (el.textContent === text) return;
  const first = el.textContent === '';
  el.textContent = text;
  if (!first) {
    el.classList.remove('flash');
    void el.offsetWidth;
    el.classList.add('flash');
  }
}

function fillIds(listId, ids, max) {
  const ol = $(listId);
  const frag = document.createDocumentFragment();
  for (const id of ids.slice(0, max)) {
    const li = document.createElement('li');
    li.textContent = String(id);
    frag.append(li);
  }
  if (ids.length > max) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = `… ${ids.length - max} more`;
    frag.append(li);
  }
  ol.replaceChildren(frag);
}

const fmtTime = (iso) => {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toLocaleDateString()} ${d.toLocaleTimeString()}.${String(d.getMilliseconds()).padStart(3, '0')}`;
};

const SKIP_PAYLOAD = new Set(['type', 'courseId', 'groupId', 'seq', 'cause', 'studentId']);
function payloadSummary(p) {
  const parts = [];
  for (const [k, v] of Object.entries(p || {})) {
    if (SKIP_PAYLOAD.has(k)) continue;
    let s = typeof v === 'string' ? v : JSON.stringify(v);
    if (s.length > 60) s = `${s.slice(0, 57)}…`;
    parts.push(`${k}=${s}`);
  }
  return parts.join(' ');
}

function renderDetail() {
  const key = state.selected;
  const row = key ? state.rows.get(key) : null;
  $('detail-empty').hidden = !!row;
  $('detail-body').hidden = !row;
  if (!row) return;
  $('d-title').textContent = `${row.key} · ${row.name}`;
  $('d-lecturer').textContent = row.lecturer;
  setText('d-state', row.state);
  setText('d-registered', `${row.registered_count} / ${row.capacity}`);
  setText('d-queue', `${row.reserved_count} / ${row.reserve_capacity}`);
  setText('d-sexlock', row.sex_lock ? `${row.sex_lock} only` : 'none');
  setText('d-closed', row.closed ? 'yes' : 'no');
  setText('d-seq', String(row.seq));
  $('d-state').dataset.state = row.state;
  const cap = $('a-capacity');
  if (document.activeElement !== cap && cap.dataset.shown !== String(row.capacity)) {
    cap.value = String(row.capacity);
    cap.dataset.shown = String(row.capacity);
  }
  highlight(row.state);

  const d = state.detail;
  if (!d || keyOf(d.section) !== key) return;
  fillIds('d-queue-list', d.queue, 400);
  fillIds('d-registered-list', d.registered, 400);
  const tbody = $('d-transitions');
  const frag = document.createDocumentFragment();
  for (const t of d.transitions) {
    const tr = document.createElement('tr');
    const cells = [
      String(t.seq),
      fmtTime(t.at),
      t.type,
      t.student_id === null ? '' : String(t.student_id),
      t.actor,
      payloadSummary(t.payload),
      t.request_id,
    ];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i === 5) td.className = 'details';
      if (i === 6) td.className = 'req';
      tr.append(td);
    });
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
}

// ---------------------------------------------------------------------------------------------
// Statechart

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (parent) parent.append(el);
  return el;
}

/** A transition's label in lines, as the server measured it: trigger and guard, then `/ actions`. */
function labelLines(label) {
  const i = label.indexOf(' / ');
  return i < 0 ? [label] : [label.slice(0, i), label.slice(i + 1)];
}

/** Draws the laid-out machine once; highlight() only toggles classes afterwards. */
function drawChart(layout) {
  const root = $('chart');
  root.replaceChildren();
  root.setAttribute('viewBox', `0 0 ${layout.width} ${layout.height}`);
  root.style.maxWidth = `${layout.width}px`;
  // Never shrunk below 90 % of its natural size (12 px text stays above 10.8 px): the pane scrolls instead.
  root.style.minWidth = `${Math.round(layout.width * 0.9)}px`;
  const defs = svg('defs', {}, root);
  for (const [id, color] of [['arrow', '#6d778b'], ['arrow-armed', '#2f5bd3']]) {
    const m = svg('marker', { id, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
    svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: color }, m);
  }
  const nodesLayer = svg('g', { class: 'nodes' }, root);
  const edgesLayer = svg('g', { class: 'edges' }, root);
  const depth = new Map(layout.states.map((s) => [s.id, s.depth]));
  // Parents first, so children are drawn on top of them.
  const nodes = layout.nodes.slice().sort((a, b) => (depth.get(a.state_id) ?? 0) - (depth.get(b.state_id) ?? 0));
  for (const n of nodes) {
    const g = svg('g', { class: `node n-${n.kind}`, 'data-id': n.id, 'data-state-id': n.state_id, 'data-path': n.path, 'data-kind': n.kind }, nodesLayer);
    if (n.kind === 'state') g.classList.add(`s-${stateKey(n.path)}`);
    svg('title', {}, g).textContent = n.kind === 'internal' ? n.label : `${n.path || 'machine'} (${n.kind})`;
    if (n.kind === 'initial') {
      svg('circle', { cx: n.x + n.width / 2, cy: n.y + n.height / 2, r: n.width / 2 }, g);
      continue;
    }
    if (n.kind === 'choice') {
      // A choice pseudostate: a diamond, left at once by one of its guarded branches.
      const cx = n.x + n.width / 2;
      const cy = n.y + n.height / 2;
      svg('polygon', { points: `${cx},${n.y} ${n.x + n.width},${cy} ${cx},${n.y + n.height} ${n.x},${cy}` }, g);
      g.querySelector('title').textContent = `${n.path} (choice: picks the state the numbers mean)`;
      continue;
    }
    svg('rect', { x: n.x, y: n.y, width: n.width, height: n.height, rx: n.kind === 'state' ? 10 : 14 }, g);
    if (n.kind === 'state') {
      const plain = n.items.length === 0;
      const t = svg('text', { x: n.x + n.width / 2, y: plain ? n.y + n.height / 2 + 4.5 : n.y + 22, 'text-anchor': 'middle', class: 'n-label' }, g);
      t.textContent = n.label;
      // Its own transitions that stay in it, two lines each (trigger and guard, then actions).
      let y = n.y + 40;
      for (const it of n.items) {
        const line = svg('text', { x: n.x + 10, y, class: 'i-item', 'data-transition': it.transition_id }, g);
        labelLines(it.text).forEach((l, i) => {
          svg('tspan', { x: n.x + 10 + (i > 0 ? 10 : 0), dy: i === 0 ? 0 : 16 }, line).textContent = l;
          if (i > 0) y += 16;
        });
        y += 16;
      }
    } else {
      const t = svg('text', { x: n.x + 12, y: n.y + 22, class: 'n-title' }, g);
      t.textContent = n.label;
      if (n.items.length > 0) {
        const title = svg('text', { x: n.x + 12, y: n.y + 42, class: 'i-title' }, g);
        title.textContent = n.kind === 'root' ? 'in every state:' : `in every ${n.label} state:`;
        n.items.forEach((it, i) => {
          const line = svg('text', { x: n.x + 20, y: n.y + 58 + i * 16, class: 'i-item', 'data-transition': it.transition_id }, g);
          line.textContent = it.text;
        });
      }
    }
  }
  for (const e of layout.edges) {
    const g = svg('g', { class: `edge e-${e.kind}`, 'data-transition': e.id, 'data-source': e.source, 'data-target': e.target }, edgesLayer);
    svg('title', {}, g).textContent = e.label || 'initial';
    const d = e.points.map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x} ${p.y}`).join(' ');
    svg('path', { d, class: 'e-line', 'marker-end': 'url(#arrow)' }, g);
    if (e.label_box && e.label) {
      const b = e.label_box;
      svg('rect', { x: b.x, y: b.y, width: b.width, height: b.height, class: 'e-label-bg', rx: 3 }, g);
      const t = svg('text', { x: b.x + 4, y: b.y + 12, class: 'e-label' }, g);
      labelLines(e.label).forEach((l, i) => {
        svg('tspan', { x: b.x + 4 + (i > 0 ? 8 : 0), dy: i === 0 ? 0 : 16 }, t).textContent = l;
      });
    }
  }
}

/** Lights the state the section is in (and its ancestors) and the transitions that can leave it. */
function highlight(path) {
  const layout = state.layout;
  if (!layout) return;
  const active = new Set();
  const byPath = new Map(layout.states.map((s) => [s.path, s]));
  const byId = new Map(layout.states.map((s) => [s.id, s]));
  for (let s = byPath.get(path); s && s.parent !== null; s = byId.get(s.parent)) active.add(s.id);
  const root = $('chart');
  for (const g of root.querySelectorAll('.node')) {
    const on = (g.dataset.kind === 'state' || g.dataset.kind === 'compound') && active.has(g.dataset.id);
    g.classList.toggle('active', on);
    if (on && g.dataset.kind === 'state' && state.shownState !== null && state.shownState !== path) {
      g.classList.remove('flash');
      void g.getBoundingClientRect();
      g.classList.add('flash');
    }
  }
  for (const g of root.querySelectorAll('.edge')) {
    // The arrows a command can take from here: those of the current state and of its ancestors.
    const armed = g.classList.contains('e-event') && active.has(g.dataset.source);
    g.classList.toggle('e-armed', armed);
    g.querySelector('.e-line').setAttribute('marker-end', armed ? 'url(#arrow-armed)' : 'url(#arrow)');
  }
  root.dataset.current = path;
  state.shownState = path;
}

async function loadMachine() {
  if (state.layout) return;
  state.layout = await api('GET', '/admin/api/machine');
  drawChart(state.layout);
  schedule('detail');
}

$('mmd').addEventListener('toggle', async () => {
  if (!$('mmd').open || $('mmd-text').textContent) return;
  try {
    $('mmd-text').textContent = await api('GET', '/admin/machine.mmd');
  } catch (err) {
    $('mmd-text').textContent = `Could not load: ${err.message}`;
  }
});

// ---------------------------------------------------------------------------------------------
// Staff actions: the ordinary staff routes, so the same rules and errors apply

function showResult(ok, text) {
  const el = $('a-result');
  el.className = `result ${ok ? 'ok' : 'err'}`;
  el.textContent = text;
}

async function act(label, method, url, body) {
  const row = state.rows.get(state.selected);
  if (!row) return;
  try {
    await api(method, url, body);
    showResult(true, `${label}: done.`);
  } catch (err) {
    showResult(false, `${label} refused (${err.status} ${err.code}): ${err.message}`);
  }
  detailLoader.request();
}

const sel = () => state.rows.get(state.selected);

$('f-capacity').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = sel();
  const capacity = Number($('a-capacity').value);
  if (!r) return;
  if (!Number.isInteger(capacity) || capacity < 0) {
    showResult(false, 'Capacity must be a whole number, 0 or more.');
    return;
  }
  void act(`Capacity ${capacity}`, 'PATCH', '/staff/capacity', { course_id: r.course_id, group_id: r.group_id, capacity });
});
$('a-close').addEventListener('click', () => {
  const r = sel();
  if (r) void act('Close', 'POST', `/sections/${r.course_id}/${r.group_id}/close`);
});
$('a-reopen').addEventListener('click', () => {
  const r = sel();
  if (r) void act('Reopen', 'POST', `/sections/${r.course_id}/${r.group_id}/reopen`);
});
function studentId() {
  const v = $('a-student').value.trim();
  if (!/^[0-9]{1,10}$/.test(v)) {
    showResult(false, 'Enter a numeric student id.');
    return null;
  }
  return Number(v);
}
$('f-student').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = sel();
  const id = studentId();
  if (r && id !== null) {
    void act(`Force enroll ${id}`, 'PUT', '/staff/force-std', { std_id: id, course_id: r.course_id, group_id: r.group_id });
  }
});
$('a-drop').addEventListener('click', () => {
  const r = sel();
  const id = studentId();
  if (r && id !== null) {
    const q = new URLSearchParams({ std_id: String(id), course_id: String(r.course_id), group_id: String(r.group_id) });
    void act(`Force drop ${id}`, 'DELETE', `/staff/force-std?${q}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Live feed (server-sent events). EventSource cannot send headers, and a token in a URL would
// end up in history and logs: the page trades its token (in a header) for a one-use ticket first.

const feed = {
  source: null,
  retryTimer: 0,
  resyncTimer: 0,
  generation: 0,
  async start() {
    this.stop();
    if (!state.token) return;
    const generation = ++this.generation;
    setConn('reconnecting', 'connecting…');
    let ticket;
    try {
      ticket = (await api('POST', '/admin/feed-ticket')).ticket;
    } catch {
      // Logged out (401/403 handled by api()), or the server is away: try again later.
      if (generation === this.generation && state.token) this.retryLater();
      return;
    }
    if (generation !== this.generation || !state.token) return;
    const es = new EventSource(`/admin/events?ticket=${encodeURIComponent(ticket)}`);
    this.source = es;
    es.addEventListener('ready', () => {
      setConn('live', 'live');
      // Whatever changed while disconnected: reload the list (rows only move forward by seq).
      loadList().catch(() => undefined);
      if (state.selected) detailLoader.request();
    });
    es.addEventListener('sections', (e) => {
      const { sections } = JSON.parse(e.data);
      let changed = false;
      for (const r of sections) changed = upsert(r) || changed;
      if (changed) schedule('view');
    });
    // The server ends the stream at the token's expiry (or its revocation): ask the API, which logs out.
    es.addEventListener('expired', () => {
      if (es !== this.source) return;
      es.close();
      this.source = null;
      loadList().catch(() => undefined);
    });
    es.onerror = () => {
      if (es !== this.source) return;
      // A ticket opens one stream only: never let EventSource reconnect with it; get a new one.
      es.close();
      this.source = null;
      setConn('reconnecting', 'reconnecting…');
      this.retryLater();
    };
    clearInterval(this.resyncTimer);
    this.resyncTimer = setInterval(() => loadList().catch(() => undefined), RESYNC_MS);
  },
  /** Asks the API why the feed dropped (logging out if the session ended), then opens a new one. */
  retryLater() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      loadList().then(() => this.start(), () => (state.token ? this.start() : undefined));
    }, 3000);
  },
  stop() {
    this.generation += 1;
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.retryTimer);
    clearInterval(this.resyncTimer);
    setConn('off', 'offline');
  },
};

function setConn(s, text) {
  const el = $('conn');
  el.dataset.state = s;
  el.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  if (!state.token || tokenRole(state.token) !== 'staff') {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('');
    return;
  }
  try {
    await Promise.all([loadList(), loadMachine()]);
  } catch (err) {
    if (state.token) showLogin(`Could not load: ${err.message}`);
    return;
  }
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  const sub = JSON.parse(atob(state.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
  $('who').textContent = `staff ${sub}`;
  feed.start();
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash && state.rows.has(fromHash)) select(fromHash);
  schedule('view');
}

void start();
