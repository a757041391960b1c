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
const TOKEN_AT_KEY = 'enrollment.admin.tokenAt';
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
  filter: { q: '', dept: '', sort: 'busy', status: 'all' },
  /** The student shown in the student view, or null. */
  student: null,
  /** The record of the student shown (what the correction form compares against). */
  studentRecord: null,
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
  $('change-password').hidden = true;
  $('who').textContent = '';
  $('login-error').textContent = message || '';
  $('login-user').focus();
}

function logout(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_AT_KEY);
  refresher.stop();
  feed.stop();
  showLogin(message);
}

/** Keeps the token (and when this page got it, for the refresher) across reloads of the tab. */
function keepToken(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(TOKEN_AT_KEY, String(Date.now()));
}

// A session outlives its tokens (POST /refresh gives a fresh one, up to the session's maximum age):
// the page trades its token for a new one at four fifths of its life, so a registrar is not logged
// out at every token expiry (an hour by default) while the session lasts. The time is measured
// from when this page got the token, on this browser's clock, so a clock that differs from the
// server's does not matter.
const refresher = {
  timer: 0,
  schedule() {
    clearTimeout(this.timer);
    if (!state.token) return;
    let claims;
    try {
      claims = JSON.parse(atob(state.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    } catch {
      return;
    }
    if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number') return;
    const gotAt = Number(sessionStorage.getItem(TOKEN_AT_KEY)) || 0;
    const dueAt = gotAt + (claims.exp - claims.iat) * 800;
    this.timer = setTimeout(() => void this.run(), Math.max(1000, dueAt - Date.now()));
  },
  async run() {
    const token = state.token;
    if (!token) return;
    try {
      const data = await api('POST', '/refresh');
      if (state.token !== token) return;
      keepToken(data.token);
      this.schedule();
    } catch (err) {
      // A session that ended is logged out by api(); the server away: try again while the token lasts.
      if (state.token === token && err.status !== 401) this.timer = setTimeout(() => void this.run(), 10_000);
    }
  },
  stop() {
    clearTimeout(this.timer);
  },
};

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
    keepToken(data.token);
    $('login-password').value = '';
    await start();
  } catch {
    errorEl.textContent = 'Login failed: the server cannot be reached.';
  } finally {
    $('login-submit').disabled = false;
  }
});

// Changing one's own password (POST /me/password): the reply's token replaces this page's, whose
// session the change ends with every other one of this staff member.
$('change-password').addEventListener('click', () => {
  for (const id of ['pw-current', 'pw-new', 'pw-again']) $(id).value = '';
  $('pw-error').textContent = '';
  $('password-dialog').showModal();
  $('pw-current').focus();
});
$('pw-cancel').addEventListener('click', () => $('password-dialog').close());
$('password-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const current = $('pw-current').value;
  const next = $('pw-new').value;
  if (next !== $('pw-again').value) {
    $('pw-error').textContent = 'The two new passwords differ.';
    return;
  }
  $('pw-save').disabled = true;
  try {
    const data = await api('POST', '/me/password', { current_password: current, new_password: next });
    keepToken(data.token);
    refresher.schedule();
    feed.start();
    $('password-dialog').close();
    for (const id of ['pw-current', 'pw-new', 'pw-again']) $(id).value = '';
    showResult(true, 'Your password was changed; your other sessions have ended.');
  } catch (err) {
    $('pw-error').textContent = `Not changed (${err.status} ${err.code}): ${err.message}`;
  } finally {
    $('pw-save').disabled = false;
  }
});

// The button ends the session on the server too (POST /logout revokes the token on every
// instance), not only in this tab; the page forgets the token whatever the answer.
$('logout').addEventListener('click', () => {
  const token = state.token;
  logout('');
  if (token) fetch('/logout', { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(() => undefined);
});

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
    if (!matchesStatus(r, state.filter.status)) continue;
    if (q && !(r.lname.includes(q) || r.llect.includes(q) || String(r.course_id).includes(q) || r.key === q)) continue;
    out.push(r);
  }
  out.sort(SORTS[state.filter.sort] || SORTS.busy);
  state.view = out;
  $('count').textContent = `${out.length} of ${state.rows.size} sections`;
}

/** The same definitions as the server's totals and CSV filter: full = open with no free seat. */
function matchesStatus(r, status) {
  if (status === 'full') return !r.closed && r.registered_count >= r.capacity;
  if (status === 'closed') return r.closed;
  if (status === 'waitlisted') return r.reserved_count > 0;
  return true;
}

function setStatusFilter(status) {
  state.filter.status = status;
  $('status-filter').value = status;
  for (const b of document.querySelectorAll('#totals [data-filter]')) b.setAttribute('aria-pressed', String(b.dataset.filter === status));
  listEl.scrollTop = 0;
  schedule('view');
}
$('status-filter').addEventListener('change', (e) => setStatusFilter(e.target.value));
for (const b of document.querySelectorAll('#totals [data-filter]')) {
  b.addEventListener('click', () => setStatusFilter(state.filter.status === b.dataset.filter ? 'all' : b.dataset.filter));
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
  if (state.student !== null) closeStudent();
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
      const [data, fill] = await Promise.all([api('GET', `/admin/api/sections/${key}?limit=30`), api('GET', `/admin/api/sections/${key}/fill`)]);
      if (key === state.selected) {
        state.detail = data;
        upsert(data.section);
        schedule('detail');
        drawFill($('section-fill'), fill, 'section');
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
  // The position is its own element, never the list marker: markers of 10 and more ran into the ids.
  ids.slice(0, max).forEach((id, i) => {
    const li = document.createElement('li');
    const pos = document.createElement('span');
    pos.className = 'pos';
    pos.textContent = String(i + 1);
    const sid = document.createElement('span');
    sid.className = 'sid';
    sid.textContent = String(id);
    li.append(pos, sid);
    frag.append(li);
  });
  if (ids.length > max) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = `… ${ids.length - max} more`;
    frag.append(li);
  }
  ol.replaceChildren(frag);
}

/** Local date and time to the second, in the browser's own time zone and language. */
const TIME_FORMAT = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
const fmtTime = (iso) => {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, TIME_FORMAT);
};

function renderDetail() {
  const key = state.selected;
  const row = key ? state.rows.get(key) : null;
  const studentShown = state.student !== null;
  $('student-view').hidden = !studentShown;
  $('detail-empty').hidden = !!row || studentShown;
  $('detail-body').hidden = !row || studentShown;
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
  const reserve = $('a-reserve');
  if (document.activeElement !== reserve && reserve.dataset.shown !== String(row.reserve_capacity)) {
    reserve.value = String(row.reserve_capacity);
    reserve.dataset.shown = String(row.reserve_capacity);
  }
  const lock = $('a-sexlock');
  if (document.activeElement !== lock && lock.dataset.shown !== String(row.sex_lock)) {
    lock.value = row.sex_lock ?? '';
    lock.dataset.shown = String(row.sex_lock);
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
    tr.dataset.type = t.type;
    const cells = [String(t.seq), fmtTime(t.at), t.text, t.by];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i === 0) td.className = 'num';
      if (i === 1) td.className = 'when';
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
  summary.request();
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
  if (!r) return;
  confirmThen(
    `Close section ${r.course_id}-${r.group_id} (${r.name})? Students can no longer enroll or queue; the ${r.registered_count} registered and ${r.reserved_count} queued keep their places.`,
    'Close section',
    () => act('Close', 'POST', `/sections/${r.course_id}/${r.group_id}/close`),
  );
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
    confirmThen(
      `Remove student ${id} from section ${r.course_id}-${r.group_id} (${r.name})? Their place goes to the head of the reserve queue; this uses none of the student's actions.`,
      'Remove student',
      () => act(`Force drop ${id}`, 'DELETE', `/staff/force-std?${q}`),
    );
  }
});

$('f-settings').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = sel();
  if (!r) return;
  const reserve = Number($('a-reserve').value);
  if (!Number.isInteger(reserve) || reserve < 0) {
    showResult(false, 'Reserve places must be a whole number, 0 or more.');
    return;
  }
  const lock = $('a-sexlock').value || null;
  const body = {};
  if (reserve !== r.reserve_capacity) body.reserve_capacity = reserve;
  if (lock !== r.sex_lock) body.sex_lock = lock;
  if (Object.keys(body).length === 0) {
    showResult(true, 'Nothing to change.');
    return;
  }
  const what = [
    body.reserve_capacity !== undefined ? `reserve places ${reserve}` : '',
    body.sex_lock !== undefined ? `sex lock ${lock ?? 'none'}` : '',
  ].filter(Boolean).join(', ');
  $('a-reserve').dataset.shown = '';
  $('a-sexlock').dataset.shown = '';
  void act(`Set ${what}`, 'PATCH', `/sections/${r.course_id}/${r.group_id}`, body);
});

$('a-roster').addEventListener('click', () => {
  const r = sel();
  if (r) void download(`/admin/api/sections/${r.course_id}/${r.group_id}/roster.csv`, `roster-${r.course_id}-${r.group_id}.csv`);
});
$('export-sections').addEventListener('click', () => {
  const f = state.filter.status;
  void download(`/admin/api/sections.csv?filter=${f}`, f === 'all' ? 'sections.csv' : `sections-${f}.csv`);
});

// ---------------------------------------------------------------------------------------------
// Confirmation before a change that cannot simply be undone by the same student

let confirmAction = null;
function confirmThen(text, okLabel, action) {
  confirmAction = action;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  $('confirm').showModal();
  $('confirm-cancel').focus();
}
$('confirm-cancel').addEventListener('click', () => {
  confirmAction = null;
  $('confirm').close();
  showResult(true, 'Cancelled; nothing was changed.');
});
$('confirm-ok').addEventListener('click', () => {
  const action = confirmAction;
  confirmAction = null;
  $('confirm').close();
  if (action) void action();
});
$('confirm').addEventListener('cancel', () => {
  confirmAction = null;
});

// ---------------------------------------------------------------------------------------------
// CSV downloads: fetched with the token in the header (never in a URL), saved from a blob

async function download(url, filename) {
  try {
    const res = await fetch(url, { headers: { authorization: `Bearer ${state.token}` } });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      showResult(false, `Export refused (${res.status} ${data.code ?? ''}): ${data.reason ?? res.statusText}`);
      return;
    }
    const blob = await res.blob();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch {
    showResult(false, 'Export failed: the server cannot be reached.');
  }
}

// ---------------------------------------------------------------------------------------------
// Totals, refreshed at most once a second while the feed reports changes

const summary = {
  timer: 0,
  last: 0,
  request() {
    if (this.timer) return;
    const wait = Math.max(0, this.last + 1000 - Date.now());
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.last = Date.now();
      void loadSummary();
    }, wait);
  },
};

async function loadSummary() {
  try {
    const s = await api('GET', '/admin/api/summary');
    $('t-holding').textContent = s.students_holding.toLocaleString();
    $('t-queued').textContent = s.students_queued.toLocaleString();
    $('t-full').textContent = s.sections_full.toLocaleString();
    $('t-closed').textContent = s.sections_closed.toLocaleString();
    $('t-waitlisted').textContent = s.sections_waitlisted.toLocaleString();
    $('totals').dataset.loaded = 'true';
  } catch {
    // The next change or resync tries again.
  }
  // The term chart reads the whole transition log: at most every 10 s, however busy the term is.
  if (!state.selected && state.student === null && Date.now() - termFillAt > 10_000) void loadTermFill();
}

let termFillAt = 0;
async function loadTermFill() {
  termFillAt = Date.now();
  try {
    drawFill($('term-fill'), await api('GET', '/admin/api/fill'), 'term');
  } catch {
    // Shown again on the next refresh.
  }
}

// ---------------------------------------------------------------------------------------------
// Fill over time: a plain SVG step chart (no library; the page's CSP allows only its own script)

const FILL_W = 640;
const FILL_H = 220;
const PAD = { l: 64, r: 16, t: 30, b: 34 };

function shortTime(ms, spanMs) {
  const d = new Date(ms);
  return spanMs > 36 * 3600_000
    ? d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })
    : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** `scope` is 'section' (capacity drawn as a line) or 'term' (capacity only named: it would flatten the lines). */
function drawFill(root, data, scope) {
  root.replaceChildren();
  root.setAttribute('viewBox', `0 0 ${FILL_W} ${FILL_H}`);
  const pts = data.points.map((p) => ({ t: new Date(p.at).getTime(), r: p.registered, q: p.queued }));
  root.dataset.points = String(pts.length);
  const last = pts.at(-1);
  root.dataset.lastRegistered = last ? String(last.r) : '0';
  root.dataset.lastQueued = last ? String(last.q) : '0';
  if (pts.length === 0) {
    svg('text', { x: FILL_W / 2, y: FILL_H / 2, 'text-anchor': 'middle', class: 'f-empty' }, root).textContent = 'No seats taken yet.';
    return;
  }
  const t0 = pts[0].t;
  const t1 = Math.max(pts.at(-1).t, t0 + 60_000);
  const top = Math.max(1, ...pts.map((p) => Math.max(p.r, p.q)));
  // The capacity line is drawn when it is in reach of the data (a section); for the whole term it
  // would flatten every line at the bottom, so it is only named in the legend.
  const showCapacity = scope === 'section' && data.capacity > 0;
  const ymax = showCapacity ? Math.max(top, data.capacity) : Math.ceil(top * 1.1);
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (FILL_W - PAD.l - PAD.r);
  const y = (v) => FILL_H - PAD.b - (v / ymax) * (FILL_H - PAD.t - PAD.b);
  for (const v of [0, Math.round(ymax / 2), ymax]) {
    svg('line', { x1: PAD.l, x2: FILL_W - PAD.r, y1: y(v), y2: y(v), class: 'f-grid' }, root);
    svg('text', { x: PAD.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'f-axis' }, root).textContent = v.toLocaleString();
  }
  svg('text', { x: PAD.l, y: FILL_H - 10, class: 'f-axis' }, root).textContent = shortTime(t0, t1 - t0);
  svg('text', { x: FILL_W - PAD.r, y: FILL_H - 10, 'text-anchor': 'end', class: 'f-axis' }, root).textContent = shortTime(t1, t1 - t0);
  if (showCapacity) {
    svg('line', { x1: PAD.l, x2: FILL_W - PAD.r, y1: y(data.capacity), y2: y(data.capacity), class: 'f-capacity' }, root);
    svg('text', { x: FILL_W - PAD.r, y: y(data.capacity) + 14, 'text-anchor': 'end', class: 'f-axis' }, root).textContent =
      `capacity now ${data.capacity.toLocaleString()}`;
  }
  // Steps: each value holds until the next point.
  const step = (key) => {
    let d = `M ${x(t0)} ${y(0)}`;
    for (const p of pts) d += ` H ${x(p.t)} V ${y(p[key])}`;
    return `${d} H ${x(t1)}`;
  };
  svg('path', { d: step('r'), class: 'f-line f-registered' }, root);
  svg('path', { d: step('q'), class: 'f-line f-queued' }, root);
  const legend = svg('text', { x: PAD.l, y: 16, class: 'f-legend' }, root);
  svg('tspan', { class: 'f-registered-text' }, legend).textContent = `■ seats taken ${last.r.toLocaleString()}`;
  svg('tspan', { dx: 14, class: 'f-queued-text' }, legend).textContent = `■ queued ${last.q.toLocaleString()}`;
  if (!showCapacity && data.capacity > 0) {
    svg('tspan', { dx: 14, class: 'f-axis' }, legend).textContent = `of ${data.capacity.toLocaleString()} seats in open sections`;
  }
}

// ---------------------------------------------------------------------------------------------
// Student lookup: record, timetable and history

const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const hhmm = (m) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;

$('lookup-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('lookup-id').value.trim();
  if (!/^[0-9]{1,10}$/.test(v)) {
    showStudentError('Enter a numeric student id.');
    return;
  }
  void openStudent(Number(v));
});
$('s-close').addEventListener('click', () => closeStudent());

function showStudentError(text) {
  state.student = 'error';
  state.studentRecord = null;
  $('s-result').textContent = '';
  $('s-title').textContent = text;
  for (const id of ['s-units', 's-actions', 's-gender', 's-dept', 's-window']) $(id).textContent = '';
  $('s-timetable').tBodies[0].replaceChildren();
  $('s-history').tBodies[0].replaceChildren();
  schedule('detail');
}

async function openStudent(id) {
  let data;
  try {
    data = await api('GET', `/admin/api/students/${id}`);
  } catch (err) {
    showStudentError(err.code === 'STUDENT_NOT_FOUND' ? `No student ${id}.` : `Could not load student ${id}: ${err.message}`);
    return;
  }
  if (state.student !== id) $('s-result').textContent = '';
  state.student = id;
  const s = data.student;
  state.studentRecord = s;
  $('s-set-actions').value = String(s.remaining_actions);
  $('s-set-units').value = String(s.max_units);
  $('s-set-window').value = localInputValue(s.window_opens);
  $('s-set-password').value = '';
  $('s-title').textContent = `Student ${s.id}`;
  $('s-units').textContent = `${s.units_held} / ${s.max_units}`;
  $('s-actions').textContent = String(s.remaining_actions);
  $('s-gender').textContent = s.gender;
  const dept = state.departments.find((d) => d.id === s.department);
  $('s-dept').textContent = dept ? dept.name : s.department === null ? 'none' : String(s.department);
  $('s-window').textContent = fmtTime(s.window_opens);
  const tt = document.createDocumentFragment();
  for (const t of data.timetable) {
    const tr = document.createElement('tr');
    const classes = t.class_time.length === 0 ? 'none' : `${t.class_time.map((c) => DAY_NAMES[c.day]).join(' ')} ${hhmm(t.class_time[0].start_minute)}-${hhmm(t.class_time[0].end_minute)}`;
    const status = t.status === 'queued' ? `queued, place ${t.queue_position}` : 'registered';
    const cells = [`${t.course_id}-${t.group_id}`, t.name, status, classes, t.exam_time === null ? 'none' : fmtTime(t.exam_time), String(t.units)];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i === 0) {
        td.className = 'link';
        td.tabIndex = 0;
        td.addEventListener('click', () => select(`${t.course_id}/${t.group_id}`));
      }
      if (i === 5) td.className = 'num';
      tr.append(td);
    });
    tt.append(tr);
  }
  if (data.timetable.length === 0) tt.append(emptyRow(6, 'No sections.'));
  $('s-timetable').tBodies[0].replaceChildren(tt);
  const hist = document.createDocumentFragment();
  for (const h of data.history) {
    const tr = document.createElement('tr');
    tr.dataset.type = h.type;
    [fmtTime(h.at), h.text, h.by].forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i === 0) td.className = 'when';
      tr.append(td);
    });
    hist.append(tr);
  }
  if (data.history.length === 0) hist.append(emptyRow(3, 'Nothing yet.'));
  $('s-history').tBodies[0].replaceChildren(hist);
  schedule('detail');
}

/** An instant as a datetime-local input shows it: the browser's own time zone, to the second. */
function localInputValue(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function showStudentResult(ok, text) {
  const el = $('s-result');
  el.className = `result ${ok ? 'ok' : 'err'}`;
  el.textContent = text;
}

/** A registrar's correction of the student shown: only what changed is sent (PATCH /students/{id}). */
async function correctStudent(body, label) {
  const id = state.student;
  if (typeof id !== 'number') return;
  try {
    await api('PATCH', `/students/${id}`, body);
    showStudentResult(true, `${label}: saved.`);
  } catch (err) {
    showStudentResult(false, `${label} refused (${err.status} ${err.code}): ${err.message}`);
    return;
  }
  await openStudent(id);
}

$('s-correct').addEventListener('submit', (e) => {
  e.preventDefault();
  const s = state.studentRecord;
  if (!s) return;
  const actions = Number($('s-set-actions').value);
  const units = Number($('s-set-units').value);
  // datetime-local is the browser's local time; the API takes an instant with its zone.
  const opens = new Date($('s-set-window').value);
  if (!Number.isInteger(actions) || actions < 0 || !Number.isInteger(units) || units < 0 || Number.isNaN(opens.getTime())) {
    showStudentResult(false, 'Actions left and the unit limit must be whole numbers, 0 or more, and the window a date and time.');
    return;
  }
  const body = {};
  const what = [];
  if (actions !== s.remaining_actions) {
    body.remaining_actions = actions;
    what.push(`actions left ${actions}`);
  }
  if (units !== s.max_units) {
    body.max_units = units;
    what.push(`unit limit ${units}`);
  }
  if (Math.floor(opens.getTime() / 1000) !== Math.floor(new Date(s.window_opens).getTime() / 1000)) {
    body.enrollment_start_time = opens.toISOString();
    what.push(`window opens ${fmtTime(body.enrollment_start_time)}`);
  }
  if (what.length === 0) {
    showStudentResult(true, 'Nothing to change.');
    return;
  }
  void correctStudent(body, `Set ${what.join(', ')}`);
});

$('s-password').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = state.student;
  const password = $('s-set-password').value;
  if (typeof id !== 'number' || password === '') return;
  confirmThen(
    `Reset the password of student ${id}? Every session of theirs ends at once; give them the new password yourself.`,
    'Reset password',
    () => {
      $('s-set-password').value = '';
      return correctStudent({ password }, 'Password reset');
    },
  );
});

function emptyRow(span, text) {
  const tr = document.createElement('tr');
  const td = document.createElement('td');
  td.colSpan = span;
  td.className = 'muted';
  td.textContent = text;
  tr.append(td);
  return tr;
}

function closeStudent() {
  state.student = null;
  schedule('detail');
  if (!state.selected) void loadTermFill();
}

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
      summary.request();
      if (state.selected) detailLoader.request();
    });
    es.addEventListener('sections', (e) => {
      const { sections } = JSON.parse(e.data);
      let changed = false;
      for (const r of sections) changed = upsert(r) || changed;
      if (changed) {
        schedule('view');
        summary.request();
      }
    });
    // The server ends the stream at the token's expiry (or its revocation): ask the API, which logs out.
    // With the token refreshed meanwhile, the list loads and a new stream opens at once.
    es.addEventListener('expired', () => {
      if (es !== this.source) return;
      es.close();
      this.source = null;
      loadList().then(
        () => this.start(),
        () => undefined,
      );
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
  $('change-password').hidden = false;
  const sub = JSON.parse(atob(state.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
  $('who').textContent = `staff ${sub}`;
  refresher.schedule();
  feed.start();
  void loadSummary();
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash && state.rows.has(fromHash)) select(fromHash);
  schedule('view');
}

void start();
