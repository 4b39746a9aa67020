(function () {
'use strict';
// Limits and timings (PROTOCOL.md sections 3-5).
var TITLE = 'LAN Chat', TEXT_MAX = 16384, PAGE = 50, GAP_PAGE = 200;
var BACKOFF_MIN = 500, BACKOFF_MAX = 10000;       // reconnect delay range, ms
// Liveness follows the server's --ping-after and --idle-timeout, which welcome.limits
// announces in seconds; these are the server's defaults, used until the first welcome.
var PING_AFTER_S = 30, IDLE_TIMEOUT_S = 90;
var QUIET_MARGIN_MS = 5000;  // a live server pings a silent client after ping_after: past that, ask
var DEAD_MARGIN_MS = 10000;  // past idle_timeout the server has closed a silent client: link is dead
var NICK_MARGIN_MS = 5000;   // the server keeps a dead connection's nick until its idle_timeout
var TYPING_SEND_MS = 3000, TYPING_SHOW_MS = 4000, GROUP_MS = 300000, TOAST_MS = 4500;
var MAX_PARALLEL_UPLOADS = 2;
var PROBE_MS = 6000;       // a tab back in view must hear from the server within this

function $(id) { return document.getElementById(id); }
var store = {
  get: function (k) { try { return localStorage.getItem('lanchat.' + k); } catch (e) { return null; } },
  set: function (k, v) { try { localStorage.setItem('lanchat.' + k, v); } catch (e) {} }
};
function fold(s) { return String(s).toUpperCase().toLowerCase(); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;   // data is always text, never markup
  return e;
}
function newCid() {
  var a = new Uint8Array(12); crypto.getRandomValues(a);
  return 'w-' + Array.prototype.map.call(a, function (b) { return (b + 256).toString(16).slice(1); }).join('');
}
function serverSeconds(name, fallback) {
  var v = S.limits[name];
  return typeof v === 'number' && v > 0 ? v : fallback;
}
function pingAfterMs() { return 1000 * serverSeconds('ping_after', PING_AFTER_S); }
function idleTimeoutMs() { return 1000 * serverSeconds('idle_timeout', IDLE_TIMEOUT_S); }
function utf8Len(s) { return new TextEncoder().encode(s).length; }
function humanSize(n) {
  var u = ['B', 'KB', 'MB', 'GB', 'TB'], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i && n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
function fmtTime(ts) {
  var d = new Date(ts); if (isNaN(d)) return '';
  var t = d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
  if (d.toDateString() === new Date().toDateString()) return t;
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ', ' + t;
}
function avatarColor(nick) {
  var h = 0; for (var i = 0; i < nick.length; i++) h = (h * 31 + nick.charCodeAt(i)) % 360;
  return 'hsl(' + h + ',55%,42%)';
}

// ---- token from the URL fragment (#k=...), never sent in a request line ----
function readToken() {
  var frag = new URLSearchParams(location.hash.slice(1));
  if (!frag.has('k')) return false;
  store.set('token', frag.get('k'));
  history.replaceState(null, '', location.pathname + location.search);
  return true;
}
readToken();
var token = store.get('token') || '';
// This browser's device key: the nick it claims belongs to it (docs/PROTOCOL.md, "Devices and
// nicks"). The server issues one on the first welcome; it never goes into a URL.
var device = store.get('device') || '';

// ---- state ----
var S = {
  ws: null, welcomed: false, everWelcomed: false, nick: store.get('nick') || '', session: '', uid: null, linkGen: 0,
  lastId: 0, lastRx: 0, gapSince: 0, sentSince: 0, attempt: 0, timer: 0, idle: 0, quiet: 0, stopped: false,
  nickRetryUntil: 0, users: new Map(), online: 0, to: '', hasOlder: false, hist: null,
  byId: new Map(), unread: 0, typers: new Map(), lastTyping: 0, limits: {}
};
var outbox = [];
try { outbox = JSON.parse(store.get('outbox') || '[]').filter(function (o) { return o && o.cid && o.text; }); } catch (e) {}
function saveOutbox() { store.set('outbox', JSON.stringify(outbox)); }
function outboxIndex(cid) { for (var i = 0; i < outbox.length; i++) if (outbox[i].cid === cid) return i; return -1; }

var scroller = $('scroller'), log = $('log'), ta = $('text');

// ---- connection ----
function wsUrl() { return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws'; }
function raw(obj) {
  if (S.ws && S.ws.readyState === 1) { S.ws.send(JSON.stringify(obj)); return true; }
  return false;
}
function connect() {
  clearTimeout(S.timer); S.timer = 0;
  if (S.ws || S.stopped) return;
  setConn(false);
  var ws;
  try { ws = new WebSocket(wsUrl()); } catch (e) { retry(); return; }
  S.ws = ws; S.welcomed = false;
  ws.onopen = function () { touch(); sendHello(); };
  ws.onmessage = function (e) {
    if (S.ws !== ws) return;
    touch();
    var m; try { m = JSON.parse(e.data); } catch (err) { return; }
    if (m && typeof m.type === 'string' && H.hasOwnProperty(m.type)) H[m.type](m);
  };
  ws.onclose = function (e) {
    if (S.ws !== ws) return;
    lost();
    if (e.code === 1008 && !S.everWelcomed && !S.stopped) {
      setBanner('The server refused the connection (policy). Retrying…', true);
    }
    retry();
  };
}
// Forget the current socket (dead, replaced, or nick change) and mark everything offline.
function lost() {
  var ws = S.ws; S.ws = null;
  if (ws) { ws.onclose = ws.onmessage = ws.onopen = null; try { ws.close(); } catch (e) {} }
  if (S.welcomed) S.nickRetryUntil = Date.now() + idleTimeoutMs() + NICK_MARGIN_MS;
  S.welcomed = false; S.hist = null; clearTimeout(S.idle); clearTimeout(S.quiet);
  setConn(false);
  markPending();
  if (!S.stopped) setBanner(S.everWelcomed ? 'Reconnecting…' : 'Connecting…');
}
function retry() {
  if (S.stopped || S.timer) return;
  var base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, S.attempt++));
  var delay = Math.max(BACKOFF_MIN, Math.min(BACKOFF_MAX, base * (0.75 + Math.random() * 0.5)));
  S.timer = setTimeout(function () { S.timer = 0; connect(); }, delay);
}
function touch() {
  S.lastRx = Date.now();
  clearTimeout(S.idle); clearTimeout(S.quiet);
  // Frames the server does not answer (typing) keep it from pinging us: ping it instead.
  S.quiet = setTimeout(function () { raw({ type: 'ping' }); }, pingAfterMs() + QUIET_MARGIN_MS);
  S.idle = setTimeout(function () { lost(); retry(); }, idleTimeoutMs() + DEAD_MARGIN_MS);
}
function sendHello() {
  if (!S.nick) { askNick(''); return; }
  var h = { type: 'hello', nick: S.nick, client: 'web/1', proto: 1 };
  if (device) h.device = device;  // also takes our nick over from a connection that died
  if (token) h.token = token;
  // An unfinished gap fill resumes from its own start, so nothing is skipped.
  S.sentSince = S.gapSince || S.lastId;
  if (S.sentSince > 0) h.since = S.sentSince;
  raw(h);
}
// The pairing link opened in a tab already showing the page changes only the fragment.
window.addEventListener('hashchange', function () {
  if (!readToken()) return;
  token = store.get('token') || '';
  if (!S.welcomed) { S.stopped = false; lost(); S.attempt = 0; connect(); }
});
window.addEventListener('online', function () { if (!S.ws) { S.attempt = 0; connect(); } });

// ---- server messages ----
var H = {
  welcome: function (m) {
    var resume = S.sentSince > 0;
    S.welcomed = true; S.everWelcomed = true; S.attempt = 0;
    S.nick = m.nick; store.set('nick', m.nick);
    S.session = m.session || ''; S.limits = m.limits || {};
    if (typeof m.uid === 'number') S.uid = m.uid;
    if (m.device && m.device !== device) { device = m.device; store.set('device', device); }
    applyRoom(m.room);
    setMuted(!!m.muted, 'The organiser muted you: you can read, but not post or share files.');
    touch();   // re-arm the liveness timers with the server's own timings
    S.users = new Map();
    (m.users || []).forEach(function (n) { S.users.set(fold(n), n); });
    S.online = typeof m.online === 'number' ? m.online : S.users.size;
    renderUsers();
    var hist = Array.isArray(m.history) ? m.history : [];
    var atBottom = nearBottom();
    hist.forEach(function (x) { addMsg(x, false); });
    if (!resume) S.hasOlder = !!m.has_more;
    if (resume && m.has_more && hist.length) {
      S.gapSince = S.sentSince;
      askHistory({ kind: 'gap', before: hist[0].id, after: S.sentSince });
    } else S.gapSince = 0;
    sessionCookie();
    setConn(true); setBanner('');
    updateChrome();
    flushOutbox();
    if (!resume || atBottom) toBottom();
  },
  msg: function (m) {
    var atBottom = nearBottom();
    var added = addMsg(m, true);
    if (m.from) { S.typers.delete(fold(m.from)); renderTyping(); }
    if (added && !isMine(m) && document.hidden) { S.unread++; updateTitle(); }
    if (added && m.from && !S.users.has(fold(m.from))) { S.users.set(fold(m.from), m.from); renderUsers(); }
    if (atBottom || isMine(m)) toBottom();
  },
  history: function (m) {
    var req = S.hist; S.hist = null;
    var msgs = Array.isArray(m.messages) ? m.messages : [];
    var h0 = scroller.scrollHeight, top0 = scroller.scrollTop;
    msgs.forEach(function (x) { addMsg(x, false); });
    if (req && req.kind === 'gap') {
      if (m.has_more && msgs.length) askHistory({ kind: 'gap', before: msgs[0].id, after: req.after });
      else S.gapSince = 0;
    } else {
      S.hasOlder = !!m.has_more && msgs.length > 0;
      scroller.scrollTop = top0 + (scroller.scrollHeight - h0);   // keep the view still
    }
    updateChrome();
  },
  join: function (m) {
    if (!m.nick) return;
    var k = fold(m.nick);
    if (k === fold(S.nick)) return;          // the joiner gets its own join too
    if (!S.users.has(k)) { S.users.set(k, m.nick); S.online++; }
    renderUsers(); note(m.nick + ' joined');
  },
  leave: function (m) {
    if (!m.nick) return;
    var k = fold(m.nick);
    if (S.users.delete(k)) S.online = Math.max(0, S.online - 1);
    S.typers.delete(k); renderTyping();
    renderUsers(); note(m.nick + ' left');
  },
  typing: function (m) {
    if (!m.from || fold(m.from) === fold(S.nick)) return;
    var k = fold(m.from), old = S.typers.get(k);
    if (old) clearTimeout(old.t);
    S.typers.set(k, { nick: m.from, t: setTimeout(function () { S.typers.delete(k); renderTyping(); }, TYPING_SHOW_MS) });
    renderTyping();
  },
  change: function (m) { applyChange(m); },
  room: function (m) { applyRoom(m); },
  notice: function (m) {
    if (m.code === 'muted' || m.code === 'unmuted') setMuted(m.code === 'muted', m.message || '');
    if (m.message) toast(m.message);
  },
  ping: function (m) { var p = { type: 'pong' }; if (m.t !== undefined) p.t = m.t; raw(p); },
  pong: function () {},
  bye: function (m) {
    if (m.reason === 'replaced') {
      // The same nick was opened on another tab or device of ours: do not fight over it.
      S.stopped = true; lost();
      setBanner('This chat was opened in another tab or window. Reload the page to use it here.', true);
      return;
    }
    if (m.reason === 'kicked' || m.reason === 'banned') {
      // Removed by the organiser: say why; a kicked user may come back by hand, never by itself.
      S.stopped = true; lost();
      setBanner(m.message || (m.reason === 'kicked' ? 'The organiser removed you from the chat.'
        : 'The organiser banned this device.'), true, m.reason === 'kicked' ? 'Join again' : '');
      return;
    }
    setBanner('The server is restarting. Reconnecting…');
  },
  error: onError
};

function onError(m) {
  var code = m.code || '', text = m.message || code;
  if (code === 'banned') {
    S.stopped = true; lost(); setBanner(text, true); return;
  }
  if (!S.welcomed && (code === 'nick_taken' || code === 'nick_invalid' || code === 'nick_owned' ||
                      code === 'room_locked')) {
    if (code === 'nick_taken' && S.everWelcomed && Date.now() < S.nickRetryUntil) {
      // Probably our own previous connection, not yet timed out on the server: wait for it.
      setBanner('Reconnecting… (waiting for the previous connection to expire)');
      lost(); retry(); return;
    }
    askNick(text); return;
  }
  if (code === 'auth_failed' || code === 'proto_unsupported') {
    S.stopped = true;
    setBanner(code === 'auth_failed'
      ? 'Access denied: open the full link shown by the server (it ends with #k=…).'
      : 'This server speaks another protocol version. Reload the page.', true);
    lost(); return;
  }
  var i = m.ref ? outboxIndex(m.ref) : -1;
  if (i >= 0) {
    if (code === 'rate_limited') {
      var item = outbox[i];
      setTimeout(function () { if (outboxIndex(item.cid) >= 0 && S.welcomed) sendItem(item); }, 1500);
    } else {
      outbox.splice(i, 1); saveOutbox();
      var p = log.querySelector('.pending[data-cid="' + cssEsc(m.ref) + '"]');
      if (p) { p.classList.remove('pending'); p.classList.add('failed'); setStatus(p, 'Not sent: ' + text); }
    }
  }
  if (code === 'rate_limited' && S.hist) {
    var req = S.hist; S.hist = null;
    setTimeout(function () { if (S.welcomed && !S.hist) askHistory(req); }, 1500);
  }
  toast(text);
}
function cssEsc(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, '_'); }

function askHistory(req) {
  if (!S.welcomed || S.hist) return;
  var h = { type: 'history', before: req.before, limit: req.kind === 'gap' ? GAP_PAGE : PAGE };
  if (req.after) h.after = req.after;
  S.hist = req;
  raw(h);
  updateChrome();
}
function loadOlder() {
  var first = log.querySelector('.m[data-id]');
  if (!first || !S.hasOlder || S.hist || !S.welcomed) return;
  askHistory({ kind: 'older', before: +first.dataset.id });
}

// ---- rendering messages ----
// Our own messages are those of our identity (uid), not of whoever had our nick before.
function isMine(m) { return S.uid !== null && m.uid === S.uid; }
function nearBottom() { return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120; }
function toBottom() { scroller.scrollTop = scroller.scrollHeight; }

// Elements in #log are ordered by data-k: message id; notes sit after the newest id;
// pending (unacknowledged) messages always last.
function place(node, key) {
  node.dataset.k = key;
  var c = log.lastElementChild;
  while (c && +c.dataset.k > key) c = c.previousElementSibling;
  log.insertBefore(node, c ? c.nextSibling : log.firstChild);
  regroup(node); regroup(node.nextElementSibling);
}
function regroup(node) {
  if (!node || !node.classList.contains('m')) return;
  var p = node.previousElementSibling;
  var same = p && p.classList.contains('m') && p.dataset.from === node.dataset.from &&
    p.dataset.to === node.dataset.to && Math.abs((+node.dataset.ts || 0) - (+p.dataset.ts || 0)) < GROUP_MS;
  node.classList.toggle('g', !!same);
}
function buildMsg(m, mine) {
  var box = el('div', 'm' + (mine ? ' me' : '') + (m.to ? ' dm' : ''));
  box.dataset.from = fold(m.from || '');
  box.dataset.to = m.to ? fold(m.to) : '';
  box.dataset.ts = Date.parse(m.ts) || Date.now();
  if (m.cid) box.dataset.cid = m.cid;
  var who = el('div', 'who');
  if (mine) who.appendChild(el('span', null, 'To ' + m.to));
  else who.appendChild(el('span', null, m.from || '?'));
  if (m.to) who.appendChild(el('span', 'tag', 'private'));
  box.appendChild(who);
  var b = el('div', 'b');
  if (mine) b.appendChild(el('span', 'vh', 'You: '));
  if (m.deleted) {
    box.classList.add('removed');
    b.appendChild(el('div', 't', m.deleted === 'operator' ? 'Message removed by the organiser'
                                                          : 'Message removed'));
  } else {
    if (m.text) b.appendChild(el('div', 't', m.text));
    if (m.file && typeof m.file === 'object') b.appendChild(buildFile(m.file));
  }
  var meta = el('div', 'meta');
  if (m.edited && !m.deleted) {
    var ed = el('span', 'ed', 'edited'); ed.title = 'Edited ' + new Date(m.edited).toLocaleString();
    meta.appendChild(ed);
  }
  var tm = el('time', null, m.ts ? fmtTime(m.ts) : '');
  if (m.ts) { tm.dateTime = m.ts; tm.title = new Date(m.ts).toLocaleString(); }
  meta.appendChild(tm);
  meta.appendChild(el('span', 'st'));
  b.appendChild(meta);
  if (mine && typeof m.id === 'number' && !m.deleted) box.appendChild(buildActions(m));
  if (m.text && !m.file) {   // short text: the time sits on the last line, chat-app style
    b.classList.add('inl');
    b.style.setProperty('--mw', (tm.textContent.length * 6.5 + 16) + 'px');
  }
  box.appendChild(b);
  return box;
}
// inline=1 asks the server to serve an image as itself (not as an attachment) for thumbnails.
// A link carries no secret: the session travels in an HttpOnly cookie (sessionCookie); v only
// makes the browser fetch again after the cookie changed.
function fileUrl(f, inline) {
  return '/files/' + encodeURIComponent(String(f.id)) + '/' + encodeURIComponent(String(f.name || 'file')) +
    '?v=' + S.linkGen + (inline ? '&inline=1' : '');
}
// After every welcome: hand the new session to the server, which sets it as a cookie, then
// reload the file links and thumbnails with it.
function sessionCookie() {
  var session = S.session;
  if (!session || !window.fetch) { refreshFileUrls(); return; }
  fetch('/session', { method: 'POST', body: session, credentials: 'same-origin',
                      headers: { 'Content-Type': 'text/plain' } })
    .then(function () { if (S.session === session) { S.linkGen++; refreshFileUrls(); } },
          function () { refreshFileUrls(); });
}
function buildFile(f) {
  var wrap = el('div', 'f');
  wrap.dataset.fid = String(f.id); wrap.dataset.fname = String(f.name || 'file');
  var url = fileUrl(f);
  if (typeof f.mime === 'string' && f.mime.indexOf('image/') === 0) {
    var a = el('a', 'thumb'); a.href = fileUrl(f, true); a.target = '_blank'; a.rel = 'noopener';
    var img = el('img'); img.loading = 'lazy'; img.alt = String(f.name || 'image'); img.src = a.href;
    img.addEventListener('error', function () { a.hidden = true; });   // keep the download link
    img.addEventListener('load', function () { if (nearBottom() || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 400) toBottom(); });
    a.appendChild(img); wrap.appendChild(a);
  }
  var dl = el('a', 'dl'); dl.href = url; dl.download = String(f.name || 'file');
  dl.insertAdjacentHTML('afterbegin', '<svg class="ico" viewBox="0 0 24 24" aria-hidden="true"><path d="M12 4v11M7 10l5 5 5-5M5 20h14"/></svg>');
  var info = el('span');
  info.appendChild(el('span', 'fn', String(f.name || 'file')));
  info.appendChild(el('span', 'fs', typeof f.size === 'number' ? humanSize(f.size) : ''));
  dl.appendChild(info); wrap.appendChild(dl);
  return wrap;
}
// The session changes on every reconnect: rebuild the file links from the current one.
function refreshFileUrls() {
  log.querySelectorAll('.f').forEach(function (w) {
    var f = { id: w.dataset.fid, name: w.dataset.fname };
    w.querySelector('.dl').href = fileUrl(f, false);
    var a = w.querySelector('.thumb'), img = a && a.querySelector('img');
    if (!a) return;
    a.href = fileUrl(f, true);
    if (!(img.complete && img.naturalWidth)) { a.hidden = false; img.src = a.href; }
  });
}
function addMsg(m, live) {
  if (m && m.type === 'change') { applyChange(m); return false; }
  if (!m || typeof m.id !== 'number' || S.byId.has(m.id)) {
    if (m && m.cid && isMine(m)) ack(m.cid);
    return false;
  }
  var mine = isMine(m);
  if (mine && m.cid) ack(m.cid);
  var node = buildMsg(m, mine);
  node.dataset.id = m.id;
  node.msg = m;
  S.byId.set(m.id, node);
  if (m.id > S.lastId) S.lastId = m.id;
  place(node, m.id);
  updateChrome();
  return true;
}
// ---- changes to the history: unsend, edit, clear (PROTOCOL.md section 10) ----
// Changes come live and inside histories, in id order; they apply to the message we hold.
function applyChange(c) {
  if (!c || typeof c.id !== 'number') return;
  if (c.id > S.lastId) S.lastId = c.id;
  if (c.change === 'clear') {
    Array.from(S.byId.keys()).forEach(function (id) {
      if (id < c.id) { S.byId.get(id).remove(); S.byId.delete(id); }
    });
    log.querySelectorAll('.note').forEach(function (n) { n.remove(); });
    S.hasOlder = false;
    note('The organiser cleared the history');
    updateChrome();
    return;
  }
  var node = S.byId.get(c.target);
  if (!node || !node.msg) return;
  var m = Object.assign({}, node.msg);
  if (c.change === 'delete') { m.text = ''; delete m.file; delete m.edited; m.deleted = c.by || 'sender'; }
  else if (c.change === 'edit' && typeof c.text === 'string' && !m.deleted) { m.text = c.text; m.edited = c.edited || c.ts; }
  else return;
  var fresh = buildMsg(m, isMine(m));
  fresh.dataset.id = m.id; fresh.msg = m;
  fresh.dataset.k = node.dataset.k;
  if (node.classList.contains('g')) fresh.classList.add('g');
  node.replaceWith(fresh);
  S.byId.set(m.id, fresh);
}
// The menu of one's own message: Edit (text only) and Delete. A button that shows on hover or
// focus (and always on touch screens), so keyboard and phone users reach it too.
function buildActions(m) {
  var wrap = el('div', 'acts');
  var btn = el('button', 'actbtn', '⋯'); btn.type = 'button';
  btn.setAttribute('aria-label', 'Actions for your message'); btn.setAttribute('aria-expanded', 'false');
  var menu = el('div', 'actmenu'); menu.hidden = true;
  if (m.text && !m.file && editable(m)) {
    var edit = el('button', null, 'Edit'); edit.type = 'button';
    edit.addEventListener('click', function () { menu.hidden = true; startEdit(m.id); });
    menu.appendChild(edit);
  }
  var del = el('button', 'danger', 'Delete'); del.type = 'button';
  del.addEventListener('click', function () {
    menu.hidden = true;
    if (window.confirm('Delete this message for everyone?')) raw({ type: 'delete', id: m.id, cid: newCid() });
  });
  menu.appendChild(del);
  btn.addEventListener('click', function () {
    menu.hidden = !menu.hidden; btn.setAttribute('aria-expanded', String(!menu.hidden));
  });
  wrap.appendChild(btn); wrap.appendChild(menu);
  return wrap;
}
// Within the server's edit window (welcome.limits.edit_window, seconds; 0: off). A server
// that does not say leaves the decision to it (edit_expired).
function editable(m) {
  var w = S.limits.edit_window;
  if (typeof w !== 'number') return true;
  return w > 0 && Date.now() - new Date(m.ts).getTime() < w * 1000;
}
function startEdit(id) {
  var node = S.byId.get(id);
  if (!node || !node.msg || node.querySelector('.editbox')) return;
  var box = el('form', 'editbox');
  var area = el('textarea'); area.value = node.msg.text || ''; area.rows = 2;
  area.setAttribute('aria-label', 'Edit your message');
  var save = el('button', 'primary', 'Save'); save.type = 'submit';
  var cancel = el('button', null, 'Cancel'); cancel.type = 'button';
  box.appendChild(area); box.appendChild(save); box.appendChild(cancel);
  box.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = area.value.trim();
    if (text && text !== node.msg.text) raw({ type: 'edit', id: id, text: text, cid: newCid() });
    box.remove();
  });
  cancel.addEventListener('click', function () { box.remove(); });
  area.addEventListener('keydown', function (e) { if (e.key === 'Escape') box.remove(); });
  node.querySelector('.b').appendChild(box);
  area.focus();
}
// ---- the room: its name and topic from the organiser; muted ----
function applyRoom(room) {
  if (!room || typeof room !== 'object') return;
  S.room = { name: String(room.name || ''), topic: String(room.topic || ''), locked: !!room.locked };
  TITLE = S.room.name || 'LAN Chat';
  $('roomName').textContent = TITLE;
  $('topic').textContent = S.room.topic;
  $('topic').hidden = !S.room.topic;
  updateTitle();
}
function setMuted(muted, text) {
  S.muted = muted;
  ta.disabled = muted; $('send').disabled = muted; $('attach').disabled = muted;
  ta.placeholder = muted ? (text || 'The organiser muted you.') : (S.to ? 'Private message to ' + S.to : 'Message');
  $('composer').classList.toggle('muted', muted);
}
function ack(cid) {
  var i = outboxIndex(cid);
  if (i >= 0) { outbox.splice(i, 1); saveOutbox(); }
  var p = log.querySelector('.pending[data-cid="' + cssEsc(cid) + '"]');
  if (p) { var n = p.nextElementSibling; p.remove(); regroup(n); }
}
function note(text) {
  var n = el('div', 'note', text);
  place(n, S.lastId + 0.5);
  if (nearBottom()) toBottom();
}
function setStatus(node, text) { var s = node.querySelector('.st'); if (s) s.textContent = text; }
function addPending(item) {
  var node = buildMsg({ from: S.nick, text: item.text, cid: item.cid, to: item.to }, true);
  node.classList.add('pending');
  setStatus(node, S.welcomed ? 'Sending…' : 'Waiting for connection…');
  place(node, Infinity);
}
function markPending() {
  log.querySelectorAll('.pending').forEach(function (p) { setStatus(p, 'Waiting for connection…'); });
}
function updateChrome() {
  var any = log.querySelector('.m[data-id]');
  $('older').hidden = !(S.hasOlder && any);
  $('older').disabled = !!S.hist || !S.welcomed;
  $('edge').hidden = !(any && !S.hasOlder);
  $('empty').hidden = !!log.firstElementChild || !S.everWelcomed;
}

// ---- sending ----
function sendItem(item) {
  var m = { type: 'msg', text: item.text, cid: item.cid };
  if (item.to) m.to = item.to;
  if (raw(m)) {
    var p = log.querySelector('.pending[data-cid="' + cssEsc(item.cid) + '"]');
    if (p) setStatus(p, 'Sending…');
  }
}
function flushOutbox() { outbox.slice().forEach(sendItem); }
function sendText() {
  var text = ta.value.trim();
  if (!text) return;
  var max = S.limits.text || TEXT_MAX;
  if (utf8Len(text) > max) { toast('This message is too long (' + humanSize(max) + ' at most).'); return; }
  var item = { cid: newCid(), text: text };
  if (S.to) item.to = S.to;
  outbox.push(item); saveOutbox();
  addPending(item);
  ta.value = ''; autosize();
  S.lastTyping = 0;
  if (S.welcomed) sendItem(item);
  toBottom(); updateChrome();
}
$('composer').addEventListener('submit', function (e) { e.preventDefault(); sendText(); ta.focus(); });
ta.addEventListener('keydown', function (e) {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendText(); }
});
function autosize() { ta.style.height = 'auto'; ta.style.height = Math.min(ta.scrollHeight + 2, 140) + 'px'; }
ta.addEventListener('input', function () {
  autosize();
  var now = Date.now();
  if (S.welcomed && ta.value.trim() && now - S.lastTyping >= TYPING_SEND_MS) {
    S.lastTyping = now;
    var t = { type: 'typing' }; if (S.to) t.to = S.to;
    raw(t);
  }
});

// ---- direct messages ----
function setTo(nick) {
  S.to = nick || '';
  $('dmChip').hidden = !S.to;
  $('dmText').textContent = S.to ? 'To: ' + S.to + ' (private)' : '';
  if (!S.muted) ta.placeholder = S.to ? 'Private message to ' + S.to : 'Message';
  renderUsers();
}
$('dmClose').addEventListener('click', function () { setTo(''); ta.focus(); });

// ---- users ----
function renderUsers() {
  var ul = $('ulist'); ul.textContent = '';
  var me = fold(S.nick);
  var list = Array.from(S.users.values()).sort(function (a, b) {
    var am = fold(a) === me, bm = fold(b) === me;
    return am !== bm ? (am ? -1 : 1) : a.localeCompare(b, undefined, { sensitivity: 'base' });
  });
  list.forEach(function (n) {
    var li = el('li');
    var mine = fold(n) === me;
    var row = el(mine ? 'div' : 'button', 'u');
    var av = el('span', 'av', n.charAt(0).toUpperCase()); av.setAttribute('aria-hidden', 'true');
    av.style.background = avatarColor(n);
    row.appendChild(av); row.appendChild(el('span', null, n));
    if (mine) row.appendChild(el('span', 'you', '(you)'));
    else {
      row.type = 'button'; row.title = 'Send a private message to ' + n;
      if (S.to && fold(S.to) === fold(n)) { row.classList.add('sel'); row.setAttribute('aria-pressed', 'true'); }
      row.addEventListener('click', function () { setTo(n); openUsers(false); ta.focus(); });
    }
    li.appendChild(row); ul.appendChild(li);
  });
  var count = Math.max(S.online, S.users.size);
  $('ucount').textContent = count;
  $('uhead').textContent = 'Online — ' + count;
}
function openUsers(open) {
  document.body.classList.toggle('uopen', open);
  $('backdrop').hidden = !open;
  $('usersBtn').setAttribute('aria-expanded', String(open));
  if (open) $('closeUsers').focus();
}
$('usersBtn').addEventListener('click', function () { openUsers(!document.body.classList.contains('uopen')); });
$('closeUsers').addEventListener('click', function () { openUsers(false); $('usersBtn').focus(); });
$('backdrop').addEventListener('click', function () { openUsers(false); });
document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && document.body.classList.contains('uopen')) openUsers(false); });
$('renick').addEventListener('click', function () { openUsers(false); askNick(''); });

// ---- nickname dialog ----
var dlg = $('nickDlg');
function askNick(err) {
  if (err || !dlg.open) $('nickErr').textContent = err || '';
  if (dlg.open) return;          // never wipe what the user is typing
  $('nickInput').value = S.nick;
  if (dlg.showModal) dlg.showModal(); else dlg.setAttribute('open', '');
  $('nickInput').focus(); $('nickInput').select();
}
dlg.addEventListener('cancel', function (e) { if (!S.nick || !S.welcomed) e.preventDefault(); });
$('nickForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var nick = $('nickInput').value.trim();
  if (!nick) { $('nickErr').textContent = 'Please enter a nickname.'; return; }
  var changed = fold(nick) !== fold(S.nick) || nick !== S.nick;
  S.nick = nick; store.set('nick', nick);
  dlg.close();
  if (S.welcomed) {
    if (changed) { lost(); S.attempt = 0; connect(); }
  } else if (S.ws && S.ws.readyState === 1) sendHello();
  else if (!S.ws) { S.attempt = 0; connect(); }
  ta.focus();
});

// ---- typing indicator, banner, toast, title ----
function renderTyping() {
  var names = Array.from(S.typers.values()).map(function (x) { return x.nick; });
  $('typing').textContent = !names.length ? '' : names.length === 1 ? names[0] + ' is typing…'
    : names.length === 2 ? names[0] + ' and ' + names[1] + ' are typing…' : names.length + ' people are typing…';
}
function setConn(on) {
  $('sub').classList.toggle('on', on);
  $('sub').classList.toggle('off', !on && S.stopped);
  $('subText').textContent = on ? S.nick + ' · online' : (S.stopped ? 'Offline' : 'Connecting…');
  updateChrome();
}
function setBanner(text, bad, action) {
  var b = $('banner');
  S.bannerText = text;
  b.textContent = text; b.hidden = !text; b.classList.toggle('bad', !!bad);
  if (action) {   // e.g. "Join again" after a kick: the user decides, nothing reconnects alone
    var again = el('button', 'pill', action); again.type = 'button';
    again.addEventListener('click', function () { S.stopped = false; setBanner(''); S.attempt = 0; connect(); });
    b.appendChild(document.createTextNode(' ')); b.appendChild(again);
  }
}
var toastTimer = 0;
function toast(text) {
  var t = $('toast'); t.textContent = text;
  clearTimeout(toastTimer); toastTimer = setTimeout(function () { t.textContent = ''; }, TOAST_MS);
}
function updateTitle() { document.title = S.unread ? '(' + S.unread + ') ' + TITLE : TITLE; }
// Phones freeze background tabs; a socket may be dead without a close event. On return,
// probe it with a ping and reconnect at once if nothing answers.
document.addEventListener('visibilitychange', function () {
  if (document.hidden) return;
  S.unread = 0; updateTitle();
  if (S.welcomed && raw({ type: 'ping' })) {
    var sent = Date.now();
    setTimeout(function () { if (S.welcomed && S.lastRx < sent) { lost(); retry(); } }, PROBE_MS);
  } else if (!S.ws && !S.stopped) { S.attempt = 0; connect(); }
});

// ---- scrolling back ----
$('older').addEventListener('click', loadOlder);
scroller.addEventListener('scroll', function () { if (scroller.scrollTop < 40) loadOlder(); }, { passive: true });

// ---- files: picker, drag and drop, paste; upload over HTTP with progress ----
var upQueue = [], upActive = 0;
$('attach').addEventListener('click', function () { $('file').click(); });
$('file').addEventListener('change', function () { queueFiles($('file').files); $('file').value = ''; });
function queueFiles(files) {
  Array.prototype.forEach.call(files || [], function (f) {
    if (!S.welcomed) { toast('Not connected: try again once back online.'); return; }
    if (S.limits.file && f.size > S.limits.file) { toast(f.name + ' is too large (' + humanSize(S.limits.file) + ' at most).'); return; }
    upQueue.push({ file: f, to: S.to });
  });
  pumpUploads();
}
function pumpUploads() {
  while (upActive < MAX_PARALLEL_UPLOADS && upQueue.length) { upActive++; startUpload(upQueue.shift()); }
}
function startUpload(job) {
  var f = job.file, name = f.name || 'file', cid = newCid();
  var row = el('div', 'up'); row.appendChild(el('span', null, name));
  var bar = el('progress'); bar.max = 1; bar.value = 0; bar.setAttribute('aria-label', 'Uploading ' + name);
  var cancel = el('button', 'iconbtn', '×'); cancel.type = 'button'; cancel.setAttribute('aria-label', 'Cancel upload of ' + name);
  var pct = el('span', 'pct', '0%'); pct.setAttribute('aria-hidden', 'true');
  row.appendChild(bar); row.appendChild(pct); row.appendChild(cancel); $('uploads').appendChild(row);
  var q = '?name=' + encodeURIComponent(name) + '&cid=' + encodeURIComponent(cid);
  if (job.to) q += '&to=' + encodeURIComponent(job.to);
  var xhr = new XMLHttpRequest();
  xhr.open('POST', '/files' + q);
  xhr.setRequestHeader('Content-Type', f.type || 'application/octet-stream');
  xhr.setRequestHeader('Authorization', 'Bearer ' + S.session);
  xhr.upload.onprogress = function (e) {
    if (e.lengthComputable && e.total) { bar.value = e.loaded / e.total; pct.textContent = Math.floor(bar.value * 100) + '%'; }
  };
  function done() { row.remove(); upActive--; pumpUploads(); }
  xhr.onload = function () {
    if (xhr.status >= 200 && xhr.status < 300) {
      try { var atB = nearBottom(); if (addMsg(JSON.parse(xhr.responseText), true) && atB) toBottom(); } catch (e) {}
    } else {
      var msg = 'Upload of ' + name + ' failed (HTTP ' + xhr.status + ').';
      try { var j = JSON.parse(xhr.responseText); if (j && j.message) msg = j.message; } catch (e) {}
      toast(msg);
    }
    done();
  };
  xhr.onerror = function () { toast('Upload of ' + name + ' failed: connection lost.'); done(); };
  xhr.onabort = done;
  cancel.addEventListener('click', function () { xhr.abort(); });
  xhr.send(f);
}
var dragDepth = 0;
function hasFiles(e) { return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types || [], 'Files') >= 0; }
document.addEventListener('dragenter', function (e) { if (hasFiles(e)) { dragDepth++; $('drop').hidden = false; } });
document.addEventListener('dragleave', function (e) { if (hasFiles(e) && --dragDepth <= 0) { dragDepth = 0; $('drop').hidden = true; } });
document.addEventListener('dragover', function (e) { if (hasFiles(e)) e.preventDefault(); });
document.addEventListener('drop', function (e) {
  if (!hasFiles(e)) return;
  e.preventDefault(); dragDepth = 0; $('drop').hidden = true;
  queueFiles(e.dataTransfer.files);
});
document.addEventListener('paste', function (e) {
  var files = e.clipboardData && e.clipboardData.files;
  if (!files || !files.length) return;
  e.preventDefault();
  var stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
  queueFiles(Array.prototype.map.call(files, function (f, i) {
    var ext = (f.type.split('/')[1] || 'bin').replace(/[^a-z0-9]/gi, '');
    return new File([f], 'pasted-' + stamp + (i ? '-' + i : '') + '.' + ext, { type: f.type });
  }));
});

// ---- start ----
outbox.forEach(addPending);
renderUsers(); updateChrome();
setBanner('Connecting…');
if (!S.nick) askNick('');
connect();
})();
