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
var QUOTE_MAX = 200;       // a reply's quote: the first characters of the original (section 12)
var AROUND = 10;           // a search result opens with this many neighbours on each side
var SEARCH_PAGE = 20, BEEP_GAP_MS = 1500, FLASH_MS = 2500, SWIPE_PX = 50;
var REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

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
  byId: new Map(), unread: 0, unreadAt: 0, unreadDm: 0, typers: new Map(), lastTyping: 0, limits: {},
  reply: null, search: null, pendingJump: 0, audio: null, gestured: false, lastBeep: 0,
  uidNick: new Map(), atSel: 0
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
    var atBottom = nearBottom(), fresh = [];
    hist.forEach(function (x) { if (addMsg(x, false)) fresh.push(x); });
    if (resume) attend(fresh);   // missed while away: as new as live messages
    redays();
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
    updateJump();
  },
  msg: function (m) {
    var atBottom = nearBottom();
    var added = addMsg(m, true);
    if (m.from) { S.typers.delete(fold(m.from)); renderTyping(); }
    if (added) { redays(); attend([m]); }
    if (added && m.from && !S.users.has(fold(m.from))) { S.users.set(fold(m.from), m.from); renderUsers(); }
    if (atBottom || isMine(m)) toBottom();
    updateJump();
  },
  history: function (m) {
    var req = S.hist; S.hist = null;
    var msgs = Array.isArray(m.messages) ? m.messages : [];
    var h0 = scroller.scrollHeight, top0 = scroller.scrollTop, fresh = [];
    msgs.forEach(function (x) { if (addMsg(x, false)) fresh.push(x); });
    redays();
    var kind = req ? req.kind : 'older';
    if (kind === 'gap') {
      attend(fresh);
      if (m.has_more && msgs.length) askHistory({ kind: 'gap', before: msgs[0].id, after: req.after });
      else S.gapSince = 0;
    } else if (kind === 'around') {
      // A search result: the message and the ones before it, then those after it.
      if (req.first === 0 || req.target < req.first) S.hasOlder = !!m.has_more && msgs.length > 0;
      askHistory({ kind: 'after', after: req.target, before: req.target + AROUND + 1, limit: AROUND,
                   target: req.target, first: req.first });
    } else if (kind === 'after') {
      // What lies between these and the messages already shown comes with "Load newer messages".
      if (req.first > req.before) addGap(req.before - 0.5, req.target + AROUND, req.first);
      showMessage(req.target, true);
    } else if (kind === 'fill') {
      var gap = req.gap;
      if (m.has_more && msgs.length && gap.isConnected) {
        gap.dataset.before = msgs[0].id;
        askHistory({ kind: 'fill', gap: gap, after: +gap.dataset.after, before: msgs[0].id, limit: GAP_PAGE });
      } else { gap.remove(); redays(); }
      scroller.scrollTop = top0;
    } else {
      S.hasOlder = !!m.has_more && msgs.length > 0;
      scroller.scrollTop = top0 + (scroller.scrollHeight - h0);   // keep the view still
    }
    updateChrome(); updateJump();
    if (!S.hist && S.pendingJump) { var j = S.pendingJump; S.pendingJump = 0; showMessage(j); }
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
  if (S.search && m.ref && m.ref === S.search.cid) {   // shown in the search dialog
    $('searchNote').textContent = text; S.search = null; return;
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
  var h = { type: 'history', before: req.before, limit: req.limit || (req.kind === 'gap' ? GAP_PAGE : PAGE) };
  if (req.after) h.after = req.after;
  S.hist = req;
  raw(h);
  updateChrome();
}
// Messages loaded around a search result may leave a hole below them: a button fills it.
function addGap(key, after, before) {
  var gap = el('div', 'gap'), b = el('button', 'pill', 'Load newer messages'); b.type = 'button';
  gap.dataset.after = after; gap.dataset.before = before;
  b.addEventListener('click', function () {
    if (!S.welcomed || S.hist) return;
    b.disabled = true;
    askHistory({ kind: 'fill', gap: gap, after: +gap.dataset.after, before: +gap.dataset.before, limit: GAP_PAGE });
  });
  gap.appendChild(b);
  place(gap, key);
}
// Show a message in the conversation, loading it with its neighbours when it is not shown.
function showMessage(id, loaded) {
  var node = S.byId.get(id);
  if (node) {
    node.scrollIntoView({ block: 'center' });
    log.querySelectorAll('.m.hl').forEach(function (n) { n.classList.remove('hl'); });
    node.classList.add('hl');
    setTimeout(function () { node.classList.remove('hl'); }, FLASH_MS);
    updateJump();
    return;
  }
  if (loaded) { toast('That message is no longer in the history.'); return; }
  if (!S.welcomed) { toast('Not connected: try again once back online.'); return; }
  if (S.hist) { S.pendingJump = id; return; }
  var first = log.querySelector('.m[data-id]');
  askHistory({ kind: 'around', before: id + 1, limit: AROUND, target: id, first: first ? +first.dataset.id : 0 });
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
  var box = el('div', 'm' + (mine ? ' me' : '') + (m.to ? ' dm' : '') + (!mine && mentionsMe(m) ? ' mention' : ''));
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
    if (m.reply_to && typeof m.reply_to === 'object') b.appendChild(buildQuote(m.reply_to));
    if (m.text) b.appendChild(richText(m.text, m.mentions));
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
  if (typeof m.id === 'number' && !m.deleted) box.appendChild(buildActions(m, mine));
  if (m.text && !m.file && !m.reply_to) {   // short text: the time sits on the last line, chat-app style
    b.classList.add('inl');
    b.style.setProperty('--mw', (tm.textContent.length * 6.5 + 16) + 'px');
  }
  box.appendChild(b);
  if (!m.deleted) box.appendChild(buildReactions(m));
  return box;
}
// Does this message mention me? The server lists the nicks it mentions (section 12).
function mentionsMe(m) {
  if (!m || !Array.isArray(m.mentions) || !S.nick) return false;
  var me = fold(S.nick);
  return m.mentions.some(function (n) { return fold(n) === me; });
}
// The text as DOM nodes: http(s) URLs become links, the @nicks the server resolved are
// marked; everything else, and every other scheme (javascript:, data:...), stays text.
var URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
var MENTION_RE = /@([^\s,.;:!?)\]}'"]+)/g;
function richText(text, mentions) {
  var div = el('div', 't'), at = new Set(), last = 0, found;
  (Array.isArray(mentions) ? mentions : []).forEach(function (n) { at.add(fold(n)); });
  URL_RE.lastIndex = 0;
  while ((found = URL_RE.exec(text))) {
    var url = trimUrl(found[0]), a = linkFor(url);
    if (!a) continue;
    addMentions(div, text.slice(last, found.index), at);
    div.appendChild(a);
    last = found.index + url.length;
    URL_RE.lastIndex = last;
  }
  addMentions(div, text.slice(last), at);
  return div;
}
// Punctuation after a URL ends the sentence, not the URL; a closing bracket belongs to it
// only when the URL opened one.
function trimUrl(u) {
  for (;;) {
    var c = u.charAt(u.length - 1), open = { ')': '(', ']': '[', '}': '{' }[c];
    if (!c) return u;
    if ('.,;:!?\'"'.indexOf(c) >= 0) u = u.slice(0, -1);
    else if (open && u.split(open).length <= u.split(c).length - 1) u = u.slice(0, -1);
    else return u;
  }
}
function linkFor(url) {
  var a = el('a', 'ln', url);
  a.href = url;
  if ((a.protocol !== 'http:' && a.protocol !== 'https:') || !a.hostname) return null;
  a.target = '_blank'; a.rel = 'noopener noreferrer';
  return a;
}
function addMentions(div, text, at) {
  if (!text) return;
  var last = 0, found;
  MENTION_RE.lastIndex = 0;
  while (at.size && (found = MENTION_RE.exec(text))) {
    if (!at.has(fold(found[1]))) continue;
    if (found.index > last) div.appendChild(document.createTextNode(text.slice(last, found.index)));
    div.appendChild(el('span', 'at' + (fold(found[1]) === fold(S.nick) ? ' atme' : ''), found[0]));
    last = found.index + found[0].length;
  }
  if (last < text.length) div.appendChild(document.createTextNode(text.slice(last)));
}
// The quote of the message answered: tapping it shows the original when it is loaded.
function buildQuote(q) {
  var btn = el('button', 'q'); btn.type = 'button';
  btn.dataset.rid = String(q.id);
  btn.appendChild(el('span', 'qf', String(q.from || '?')));
  btn.appendChild(el('span', 'qt', q.deleted ? 'Message removed' : String(q.text || '')));
  if (q.deleted) btn.classList.add('qdel');
  btn.setAttribute('aria-label', 'Reply to ' + (q.from || '?') + ': ' +
    (q.deleted ? 'message removed' : String(q.text || '')) + '. Show the original');
  btn.addEventListener('click', function () {
    if (S.byId.has(q.id) || !q.deleted) showMessage(q.id);   // loaded with its neighbours if need be
    else toast('The original message was removed.');
  });
  return btn;
}
// Reactions: one chip per emoji with its count; ours highlighted; a tap toggles ours.
function buildReactions(m) {
  var wrap = el('div', 'rx');
  var r = m.reactions && typeof m.reactions === 'object' ? m.reactions : {};
  Object.keys(r).forEach(function (emoji) {
    var uids = Array.isArray(r[emoji]) ? r[emoji] : [];
    if (!uids.length) return;
    var mineToo = S.uid !== null && uids.indexOf(S.uid) >= 0;
    var chip = el('button', 'rc' + (mineToo ? ' own' : '')); chip.type = 'button';
    chip.appendChild(el('span', 're', emoji));
    chip.appendChild(el('span', 'rn', String(uids.length)));
    chip.setAttribute('aria-pressed', String(mineToo));
    chip.setAttribute('aria-label', emoji + ' ' + uids.length + (uids.length === 1 ? ' reaction' : ' reactions'));
    chip.title = uids.map(function (u) { return u === S.uid ? 'you' : (S.uidNick.get(u) || '?'); }).join(', ');
    chip.addEventListener('click', function () { react(m.id, mineToo ? '' : emoji); });
    wrap.appendChild(chip);
  });
  wrap.hidden = !wrap.firstChild;
  return wrap;
}
function myReaction(m) {
  var r = m && m.reactions && typeof m.reactions === 'object' ? m.reactions : {};
  for (var e in r) if (r.hasOwnProperty(e) && Array.isArray(r[e]) && r[e].indexOf(S.uid) >= 0) return e;
  return '';
}
function react(id, emoji) {
  if (S.muted) { toast('The organiser muted you.'); return; }
  if (!raw({ type: 'react', id: id, emoji: emoji, cid: newCid() })) toast('Not connected: try again once back online.');
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
    a.addEventListener('click', function (e) {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button) return;   // a new tab, as asked
      e.preventDefault(); openViewer(a);
    });
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
  if (typeof m.uid === 'number' && m.from) S.uidNick.set(m.uid, m.from);
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
    log.querySelectorAll('.note, .gap').forEach(function (n) { n.remove(); });
    S.hasOlder = false;
    if (S.reply && S.reply.id < c.id) setReply(null);
    redays();
    note('The organiser cleared the history');
    updateChrome();
    return;
  }
  if (c.change === 'delete' || c.change === 'edit') updateQuotes(c);
  var node = S.byId.get(c.target);
  if (!node || !node.msg) return;
  var m = Object.assign({}, node.msg);
  if (c.change === 'react') {
    if (c.reactions && typeof c.reactions === 'object') m.reactions = c.reactions;
    node.msg = m;
    node.querySelector('.rx').replaceWith(buildReactions(m));
    return;
  }
  if (c.change === 'delete') { m.text = ''; delete m.file; delete m.edited; delete m.reactions; m.deleted = c.by || 'sender'; }
  else if (c.change === 'edit' && typeof c.text === 'string' && !m.deleted) { m.text = c.text; m.edited = c.edited || c.ts; }
  else return;
  if (S.reply && S.reply.id === m.id && m.deleted) setReply(null);
  rebuild(node, m);
}
function rebuild(node, m) {
  var fresh = buildMsg(m, isMine(m));
  fresh.dataset.id = m.id; fresh.msg = m;
  fresh.dataset.k = node.dataset.k;
  if (node.classList.contains('g')) fresh.classList.add('g');
  node.replaceWith(fresh);
  S.byId.set(m.id, fresh);
}
// A removed or edited original changes the quotes of its replies too (section 12).
function updateQuotes(c) {
  S.byId.forEach(function (node) {
    var m = node.msg;
    if (!m || !m.reply_to || m.reply_to.id !== c.target || m.deleted) return;
    var q = Object.assign({}, m.reply_to);
    if (c.change === 'delete') { q.text = ''; q.deleted = true; }
    else if (typeof c.text === 'string' && !q.deleted) q.text = c.text.slice(0, QUOTE_MAX);
    else return;
    rebuild(node, Object.assign({}, m, { reply_to: q }));
  });
}
// Every message has a menu: Reply and React; one's own also Edit (text only) and Delete. A
// button that shows on hover or focus (and always on touch screens), so keyboard and phone
// users reach it too.
function buildActions(m, mine) {
  var wrap = el('div', 'acts');
  var btn = el('button', 'actbtn', '⋯'); btn.type = 'button';
  btn.setAttribute('aria-label', mine ? 'Actions for your message' : 'Actions for the message from ' + (m.from || '?'));
  btn.setAttribute('aria-expanded', 'false');
  var menu = el('div', 'actmenu'); menu.hidden = true;
  var picker = el('div', 'picker'); picker.hidden = true;
  picker.setAttribute('role', 'group'); picker.setAttribute('aria-label', 'Pick a reaction');
  function close() { menu.hidden = picker.hidden = true; btn.setAttribute('aria-expanded', 'false'); }
  function item(label, cls, action) {
    var b = el('button', cls, label); b.type = 'button';
    b.addEventListener('click', function () { close(); action(); });
    menu.appendChild(b);
  }
  item('Reply', null, function () { setReply(m); });
  item('React', null, function () {
    if (S.muted) { toast('The organiser muted you.'); return; }
    fillPicker(picker, m.id, close);
    picker.hidden = false; btn.setAttribute('aria-expanded', 'true');
    (picker.querySelector('.own') || picker.firstChild).focus();
  });
  if (mine && m.text && !m.file && editable(m)) item('Edit', null, function () { startEdit(m.id); });
  if (mine) item('Delete', 'danger', function () {
    if (window.confirm('Delete this message for everyone?')) raw({ type: 'delete', id: m.id, cid: newCid() });
  });
  btn.addEventListener('click', function () {
    var open = menu.hidden && picker.hidden;
    closeMenus();
    menu.hidden = !open; btn.setAttribute('aria-expanded', String(open));
    if (open) menu.firstChild.focus();
  });
  wrap.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && !(menu.hidden && picker.hidden)) { e.stopPropagation(); close(); btn.focus(); }
  });
  wrap.appendChild(btn); wrap.appendChild(menu); wrap.appendChild(picker);
  return wrap;
}
// The reaction picker, built when opened: our current reaction is the one shown pressed.
function fillPicker(picker, id, close) {
  var node = S.byId.get(id), current = myReaction(node && node.msg);
  picker.textContent = '';
  REACTIONS.forEach(function (emoji) {
    var b = el('button', emoji === current ? 'own' : null, emoji); b.type = 'button';
    b.setAttribute('aria-label', (emoji === current ? 'Remove reaction ' : 'React with ') + emoji);
    b.setAttribute('aria-pressed', String(emoji === current));
    b.addEventListener('click', function () { close(); react(id, emoji === current ? '' : emoji); });
    picker.appendChild(b);
  });
}
function closeMenus(except) {
  log.querySelectorAll('.acts').forEach(function (w) {
    if (w === except) return;
    w.querySelector('.actmenu').hidden = true; w.querySelector('.picker').hidden = true;
    w.querySelector('.actbtn').setAttribute('aria-expanded', 'false');
  });
}
document.addEventListener('click', function (e) {
  closeMenus(e.target && e.target.closest ? e.target.closest('.acts') : null);
});
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
  var node = buildMsg({ from: S.nick, text: item.text, cid: item.cid, to: item.to, reply_to: item.quote }, true);
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
  if (typeof item.reply_to === 'number') m.reply_to = item.reply_to;
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
  if (S.reply) { item.reply_to = S.reply.id; item.quote = S.reply; setReply(null); }
  outbox.push(item); saveOutbox();
  addPending(item);
  ta.value = ''; autosize();
  S.lastTyping = 0;
  if (S.welcomed) sendItem(item);
  toBottom(); updateChrome();
}
// ---- replying: the quote above the composer until sent or cancelled ----
function setReply(m) {
  if (m && S.muted) { toast('The organiser muted you.'); return; }
  S.reply = m ? { id: m.id, from: m.from || '?',
                  text: m.file ? String(m.file.name || 'file') : String(m.text || '').slice(0, QUOTE_MAX) } : null;
  $('replyChip').hidden = !S.reply;
  $('replyFrom').textContent = S.reply ? 'Replying to ' + S.reply.from : '';
  $('replyText').textContent = S.reply ? S.reply.text : '';
  if (m && m.to && !S.to) setTo(isMine(m) ? m.to : m.from);   // a private message is answered privately
  if (m) ta.focus();
}
$('replyClose').addEventListener('click', function () { setReply(null); ta.focus(); });
$('composer').addEventListener('submit', function (e) { e.preventDefault(); sendText(); ta.focus(); });
ta.addEventListener('keydown', function (e) {
  if (!$('atList').hidden && !e.isComposing) {
    var opts = $('atList').children;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      S.atSel = (S.atSel + (e.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length; markAt();
      return;
    }
    if (e.key === 'Enter' || e.key === 'Tab') { e.preventDefault(); pickAt(opts[S.atSel].dataset.nick); return; }
    if (e.key === 'Escape') { e.preventDefault(); $('atList').hidden = true; return; }
  }
  if (e.key === 'Escape' && S.reply) { setReply(null); return; }
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendText(); }
});
// ---- @mentions: typing @ suggests the nicks online ----
function atQuery() {
  var pos = ta.selectionStart, found = /(^|\s)@([^\s@]{0,32})$/.exec(ta.value.slice(0, pos));
  return found ? { start: pos - found[2].length - 1, end: pos, q: found[2] } : null;
}
function renderAt() {
  var list = $('atList'), q = atQuery();
  list.textContent = ''; S.atSel = 0;
  var me = fold(S.nick), fq = q ? fold(q.q) : '';
  var names = !q ? [] : Array.from(S.users.values()).filter(function (n) {
    return fold(n) !== me && fold(n).indexOf(fq) === 0 && fold(n) !== fq;
  }).sort(function (a, b) { return a.localeCompare(b, undefined, { sensitivity: 'base' }); }).slice(0, 6);
  names.forEach(function (n) {
    var b = el('button', 'atopt', '@' + n); b.type = 'button'; b.dataset.nick = n;
    b.addEventListener('mousedown', function (e) { e.preventDefault(); });   // the caret stays
    b.addEventListener('click', function () { pickAt(n); });
    list.appendChild(b);
  });
  list.hidden = !names.length;
  markAt();
}
function markAt() {
  Array.prototype.forEach.call($('atList').children, function (b, i) { b.classList.toggle('sel', i === S.atSel); });
}
function pickAt(nick) {
  var q = atQuery();
  $('atList').hidden = true;
  if (!q) return;
  var v = ta.value, tail = v.slice(q.end);
  ta.value = v.slice(0, q.start) + '@' + nick + (tail.charAt(0) === ' ' ? '' : ' ') + tail;
  var caret = q.start + nick.length + 2;
  ta.focus(); ta.setSelectionRange(caret, caret); autosize();
}
function autosize() { ta.style.height = 'auto'; ta.style.height = Math.min(ta.scrollHeight + 2, 140) + 'px'; }
ta.addEventListener('input', function () {
  autosize(); renderAt();
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
// ---- attention while the page is hidden: title, favicon badge, a beep, a vibration ----
// Mentions of me and direct messages to me are counted apart and get a two-tone beep.
function attend(msgs) {
  if (!document.hidden) return;
  var strong = false, any = false;
  msgs.forEach(function (m) {
    if (!m || typeof m.id !== 'number' || isMine(m) || m.deleted) return;
    any = true; S.unread++;
    if (mentionsMe(m)) { S.unreadAt++; strong = true; }
    else if (m.to) { S.unreadDm++; strong = true; }
  });
  if (!any) return;
  updateTitle();
  if (soundOn() && Date.now() - S.lastBeep > BEEP_GAP_MS) {
    S.lastBeep = Date.now();
    beep(strong);
    if (S.gestured && navigator.vibrate) { try { navigator.vibrate(strong ? [120, 80, 120] : 150); } catch (e) {} }
  }
}
function updateTitle() {
  var extra = (S.unreadAt ? ' @' + S.unreadAt : '') + (S.unreadDm ? ' ✉' + S.unreadDm : '');
  document.title = S.unread ? '(' + S.unread + ')' + extra + ' ' + TITLE : TITLE;
  drawFavicon(S.unread, S.unreadAt + S.unreadDm > 0);
}
// The icon is drawn: a chat bubble, and the unread count on a badge (red for mentions and
// direct messages), as a data: URL.
var iconShown = '';
function drawFavicon(count, strong) {
  var key = count + (strong ? '!' : '');
  if (key === iconShown) return;
  var c = document.createElement('canvas'), g = c.getContext && c.getContext('2d');
  if (!g) return;
  iconShown = key;
  c.width = c.height = 64;
  g.fillStyle = '#1f5fd6';
  g.beginPath(); g.arc(30, 30, 26, 0, 2 * Math.PI); g.fill();
  g.beginPath(); g.moveTo(12, 46); g.lineTo(6, 60); g.lineTo(26, 52); g.fill();
  g.fillStyle = '#fff';
  [18, 30, 42].forEach(function (x) { g.beginPath(); g.arc(x, 30, 4.5, 0, 2 * Math.PI); g.fill(); });
  if (count > 0) {
    var text = count > 99 ? '99+' : String(count);
    g.fillStyle = strong ? '#d92d20' : '#0b7a3b';
    g.beginPath(); g.arc(44, 20, 20, 0, 2 * Math.PI); g.fill();
    g.fillStyle = '#fff'; g.font = 'bold ' + (text.length > 2 ? 18 : 26) + 'px sans-serif';
    g.textAlign = 'center'; g.textBaseline = 'middle';
    g.fillText(text, 44, 21);
  }
  $('favicon').href = c.toDataURL('image/png');
}
function soundOn() { return store.get('sound') !== 'off'; }
function renderSound() {
  var on = soundOn();
  $('soundBtn').setAttribute('aria-pressed', String(on));
  $('soundBtn').classList.toggle('muted', !on);
}
$('soundBtn').addEventListener('click', function () {
  store.set('sound', soundOn() ? 'off' : 'on'); renderSound();
  toast(soundOn() ? 'Sound and vibration on for messages that come while the page is hidden.'
                  : 'Sound and vibration off.');
});
// Browsers let a page play sound only after a first tap or key press: make the audio
// context then.
function firstGesture() {
  S.gestured = true;
  if (S.audio) return;
  var AC = window.AudioContext || window.webkitAudioContext;
  if (!AC) return;
  try { S.audio = new AC(); } catch (e) { S.audio = null; }
}
document.addEventListener('pointerdown', firstGesture, true);
document.addEventListener('keydown', firstGesture, true);
function beep(strong) {
  var ctx = S.audio;
  if (!ctx) return;
  try {
    if (ctx.state === 'suspended' && ctx.resume) ctx.resume();
    var t = ctx.currentTime;
    (strong ? [880, 1320] : [660]).forEach(function (f, i) {
      var o = ctx.createOscillator(), g = ctx.createGain(), t0 = t + i * 0.14;
      o.type = 'sine'; o.frequency.value = f;
      g.gain.setValueAtTime(0.0001, t0);
      g.gain.exponentialRampToValueAtTime(0.25, t0 + 0.01);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.12);
      o.connect(g); g.connect(ctx.destination);
      o.start(t0); o.stop(t0 + 0.13);
    });
  } catch (e) {}
}
// Phones freeze background tabs; a socket may be dead without a close event. On return,
// probe it with a ping and reconnect at once if nothing answers.
document.addEventListener('visibilitychange', function () {
  if (document.hidden) return;
  S.unread = S.unreadAt = S.unreadDm = 0; updateTitle();
  if (S.welcomed && raw({ type: 'ping' })) {
    var sent = Date.now();
    setTimeout(function () { if (S.welcomed && S.lastRx < sent) { lost(); retry(); } }, PROBE_MS);
  } else if (!S.ws && !S.stopped) { S.attempt = 0; connect(); }
});

// ---- scrolling back ----
$('older').addEventListener('click', loadOlder);
scroller.addEventListener('scroll', function () {
  if (scroller.scrollTop < 40) loadOlder();
  if (!jumpFrame) jumpFrame = requestAnimationFrame(function () { jumpFrame = 0; updateJump(); });
}, { passive: true });

// ---- jump to latest: shown when scrolled up, with the count of messages below ----
var jumpFrame = 0;
function updateJump() {
  var jump = $('jump');
  if (nearBottom()) { jump.hidden = true; return; }
  var bottom = scroller.getBoundingClientRect().bottom, n = 0;
  for (var c = log.lastElementChild; c; c = c.previousElementSibling) {
    if (!c.classList.contains('m')) continue;
    if (c.getBoundingClientRect().top < bottom) break;
    n++;
  }
  $('jumpCount').textContent = n ? String(n) : '';
  jump.setAttribute('aria-label', 'Jump to latest' + (n ? ', ' + n + (n === 1 ? ' message' : ' messages') + ' below' : ''));
  jump.hidden = false;
}
$('jump').addEventListener('click', function () { toBottom(); $('jump').hidden = true; ta.focus(); });

// ---- day separators: "Today", "Yesterday" or the date between messages of different days ----
function dayLabel(ts) {
  var d = new Date(ts), today = new Date();
  var y = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  var o = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== today.getFullYear()) o.year = 'numeric';
  return d.toLocaleDateString([], o);
}
function redays() {
  var prevDay = '', sep = null, c = log.firstElementChild, next;
  for (; c; c = next) {
    next = c.nextElementSibling;
    if (c.classList.contains('day')) { if (sep) sep.remove(); sep = c; continue; }
    if (!c.classList.contains('m')) continue;
    var day = new Date(+c.dataset.ts).toDateString();
    if (day !== prevDay) {
      if (!sep || sep.dataset.day !== day) {
        if (sep) sep.remove();
        sep = el('div', 'day'); sep.dataset.day = day;
        sep.appendChild(el('span', null, ''));
        log.insertBefore(sep, c);
      }
      sep.dataset.k = (+c.dataset.k) - 0.01;
      var label = dayLabel(+c.dataset.ts);
      if (sep.firstChild.textContent !== label) sep.firstChild.textContent = label;
      regroup(c);
    } else if (sep) { sep.remove(); regroup(c); }
    sep = null; prevDay = day;
  }
  if (sep) sep.remove();
}

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

// ---- search: a dialog; results open in the conversation with their neighbours ----
var sdlg = $('searchDlg');
$('searchBtn').addEventListener('click', function () {
  var sel = $('searchFrom'), keep = sel.value, names = new Map();
  S.users.forEach(function (n, k) { names.set(k, n); });
  S.byId.forEach(function (node) { var f = node.msg && node.msg.from; if (f && !names.has(fold(f))) names.set(fold(f), f); });
  while (sel.options.length > 1) sel.remove(1);
  Array.from(names.values()).sort(function (a, b) { return a.localeCompare(b, undefined, { sensitivity: 'base' }); })
    .forEach(function (n) { var o = el('option', null, n); o.value = n; sel.appendChild(o); });
  sel.value = names.has(fold(keep)) ? names.get(fold(keep)) : '';
  // In a private chat, the search may keep to that conversation (search.with).
  if (!S.to || $('searchWithText').dataset.peer !== fold(S.to)) $('searchWith').checked = false;
  $('searchWithRow').hidden = !S.to;
  $('searchWithText').textContent = S.to ? 'Only the private chat with ' + S.to : '';
  $('searchWithText').dataset.peer = S.to ? fold(S.to) : '';
  if (sdlg.showModal) sdlg.showModal(); else sdlg.setAttribute('open', '');
  $('searchInput').focus(); $('searchInput').select();
});
$('searchClose').addEventListener('click', function () { sdlg.close(); });
sdlg.addEventListener('close', function () { $('searchBtn').focus(); });
$('searchForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var text = $('searchInput').value.trim();
  if (!text) { $('searchNote').textContent = 'Type the words to find.'; return; }
  $('searchResults').textContent = '';
  askSearch({ text: text, from: $('searchFrom').value, peer: S.to && $('searchWith').checked ? S.to : '' });
});
$('searchMore').addEventListener('click', function () {
  if (S.search && S.search.oldest) askSearch({ text: S.search.text, from: S.search.from, peer: S.search.peer, before: S.search.oldest });
});
function askSearch(q) {
  var r = { type: 'search', text: q.text, cid: newCid(), limit: SEARCH_PAGE };
  if (q.from) r.from = q.from;
  if (q.peer) r['with'] = q.peer;
  if (q.before) r.before = q.before;
  S.search = { cid: r.cid, text: q.text, from: q.from || '', peer: q.peer || '', oldest: q.before || 0 };
  $('searchMore').hidden = true;
  $('searchNote').textContent = raw(r) ? 'Searching…' : 'Not connected: try again once back online.';
}
H.search_results = function (m) {
  if (!S.search || m.cid !== S.search.cid) return;
  var list = $('searchResults'), results = Array.isArray(m.results) ? m.results : [];
  results.forEach(function (r) {
    if (!r || typeof r.id !== 'number') return;
    if (!S.search.oldest || r.id < S.search.oldest) S.search.oldest = r.id;
    list.appendChild(buildResult(r));
  });
  var n = list.children.length;
  $('searchNote').textContent = n ? n + (n === 1 ? ' message found' : ' messages found') + (m.has_more ? ', more below' : '')
                                  : 'No message found.';
  $('searchMore').hidden = !(m.has_more && results.length);
};
function buildResult(r) {
  var li = el('li'), b = el('button', 'sr'); b.type = 'button';
  var head = el('span', 'srh');
  head.appendChild(el('span', 'srf', (r.from || '?') + (r.to ? ' → ' + r.to : '')));
  if (r.to) head.appendChild(el('span', 'tag', 'private'));
  var tm = el('time', null, r.ts ? fmtTime(r.ts) : ''); if (r.ts) tm.dateTime = r.ts;
  head.appendChild(tm);
  b.appendChild(head);
  var text = r.text || '';
  if (r.file && r.file.name) text = (text ? text + ' · ' : '') + String(r.file.name);
  b.appendChild(el('span', 'srt', text));
  b.addEventListener('click', function () {
    sdlg.close();
    if (typeof r.uid === 'number' && r.from) S.uidNick.set(r.uid, r.from);
    showMessage(r.id);
  });
  li.appendChild(b);
  return li;
}

// ---- the image viewer: full screen, swipe or arrows between the conversation's images ----
var viewer = $('viewer'), vItems = [], vAt = 0, vPushed = false, vTouch = null;
function openViewer(thumb) {
  vItems = Array.prototype.slice.call(log.querySelectorAll('.thumb:not([hidden])'));
  vAt = Math.max(0, vItems.indexOf(thumb));
  showViewer();
  if (!viewer.open) {
    if (viewer.showModal) viewer.showModal(); else viewer.setAttribute('open', '');
    history.pushState({ viewer: true }, '');     // Back closes the viewer, not the chat
    vPushed = true;
  }
  $('vClose').focus();
}
function showViewer() {
  var a = vItems[vAt]; if (!a) return;
  var w = a.closest('.f'), name = w ? w.dataset.fname : 'image';
  $('vImg').src = a.href; $('vImg').alt = name;
  $('vName').textContent = name;
  $('vCount').textContent = (vAt + 1) + ' of ' + vItems.length;
  var dl = w && w.querySelector('.dl');
  $('vDl').href = dl ? dl.href : a.href;
  $('vDl').setAttribute('download', name);
  $('vDl').setAttribute('aria-label', 'Download ' + name);
  $('vPrev').disabled = vAt === 0;
  $('vNext').disabled = vAt >= vItems.length - 1;
}
function stepViewer(d) {
  var to = vAt + d;
  if (to < 0 || to >= vItems.length) return;
  vAt = to; showViewer();
}
$('vPrev').addEventListener('click', function () { stepViewer(-1); });
$('vNext').addEventListener('click', function () { stepViewer(1); });
$('vClose').addEventListener('click', function () { viewer.close(); });
viewer.addEventListener('close', function () {
  var a = vItems[vAt];
  $('vImg').removeAttribute('src');
  if (vPushed) { vPushed = false; history.back(); }
  if (a && a.isConnected) a.focus();
});
window.addEventListener('popstate', function () {
  if (vPushed && viewer.open) { vPushed = false; viewer.close(); }
});
viewer.addEventListener('keydown', function (e) {
  if (e.key === 'ArrowLeft') { e.preventDefault(); stepViewer(-1); }
  else if (e.key === 'ArrowRight') { e.preventDefault(); stepViewer(1); }
});
// One finger swipes; two fingers pinch (the browser zooms, touch-action allows it).
$('vStage').addEventListener('touchstart', function (e) {
  vTouch = e.touches.length === 1 ? { x: e.touches[0].clientX, y: e.touches[0].clientY } : null;
}, { passive: true });
$('vStage').addEventListener('touchend', function (e) {
  if (!vTouch || !e.changedTouches.length) return;
  var dx = e.changedTouches[0].clientX - vTouch.x, dy = e.changedTouches[0].clientY - vTouch.y;
  vTouch = null;
  if (window.visualViewport && window.visualViewport.scale > 1.05) return;   // zoomed in: panning
  if (Math.abs(dx) > SWIPE_PX && Math.abs(dx) > 2 * Math.abs(dy)) stepViewer(dx < 0 ? 1 : -1);
}, { passive: true });
$('vStage').addEventListener('click', function (e) { if (e.target === $('vStage')) viewer.close(); });

// ---- start ----
outbox.forEach(addPending);
renderUsers(); updateChrome(); renderSound(); drawFavicon(0, false); redays();
setBanner('Connecting…');
if (!S.nick) askNick('');
connect();
})();
