(function () {
'use strict';
// The organiser's page (docs/PROTOCOL.md section 11). The server handed the operator key over
// as an HttpOnly cookie with this page: every request below carries it by itself.
var POLL_MS = 1000, TOAST_MS = 5000;

function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;   // data is always text, never markup
  return e;
}
function when(ts) { var d = new Date(ts); return isNaN(d) ? '' : d.toLocaleString(); }
function size(n) {
  var u = ['B', 'KB', 'MB', 'GB', 'TB'], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i && n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
}
var toastTimer = 0;
function toast(text) {
  $('toast').textContent = text;
  clearTimeout(toastTimer); toastTimer = setTimeout(function () { $('toast').textContent = ''; }, TOAST_MS);
}

function act(action, body) {
  return fetch('/admin/api/' + action, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {})
  }).then(function (r) {
    return r.json().catch(function () { return {}; }).then(function (j) {
      if (!r.ok) throw new Error(j.message || ('HTTP ' + r.status));
      return j;
    });
  }).then(function (j) { refresh(); return j; },
          function (e) { toast(e.message); throw e; });
}

var S = { state: null, editing: false, qr: 0 };

function refresh() {
  return fetch('/admin/api/state', { credentials: 'same-origin' }).then(function (r) {
    if (r.status === 401) { $('status').textContent = 'The server restarted: reload this page.'; return null; }
    return r.json();
  }).then(function (st) {
    if (!st) return;
    S.state = st; render(st);
    $('status').textContent = 'Live · ' + new Date().toLocaleTimeString();
  }, function () { $('status').textContent = 'The server does not answer.'; });
}

function render(st) {
  var room = st.room || {};
  if (!S.editing) { $('roomName').value = room.name || ''; $('roomTopic').value = room.topic || ''; }
  $('lockBtn').textContent = room.locked ? 'Unlock the room' : 'Lock the room';
  $('lockState').textContent = room.locked ? 'Locked: nobody new may join; people already in, and those coming back, can.'
                                           : 'Open: anyone with the pairing code may join.';
  if ($('pairUrl').textContent !== st.pairing_url) {
    $('pairUrl').textContent = st.pairing_url;
    $('qr').src = '/qr.svg?v=' + (++S.qr);
  }
  renderUsers(st.users || []);
  renderBans(st.bans || [], st.mutes || []);
  var c = st.counters || {};
  $('counters').textContent = (c.messages || 0) + ' messages, ' + (c.files || 0) + ' files (' +
    size(c.file_bytes || 0) + '), ' + size(c.free_disk || 0) + ' free on the disk, ' +
    (c.connections || 0) + ' connections.';
  renderRecent(st.recent || []);
  var ev = $('events'); ev.textContent = '';
  (st.events || []).slice().reverse().forEach(function (e) {
    ev.appendChild(el('li', null, when(e.ts) + ' — ' + e.text));
  });
  if (!ev.firstChild) ev.appendChild(el('li', 'muted', 'Nothing to report.'));
}

function button(text, onClick, cls) {
  var b = el('button', cls || null, text); b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

function renderUsers(users) {
  var body = $('users').tBodies[0]; body.textContent = '';
  users.forEach(function (u) {
    var tr = el('tr');
    [u.nick + (u.muted ? ' (muted)' : ''), u.device, u.address, u.transport, when(u.since),
     String(u.messages)].forEach(function (v) { tr.appendChild(el('td', null, v)); });
    var td = el('td'), row = el('div', 'row');
    row.appendChild(button('Kick', function () {
      act('kick', { nick: u.nick, reason: $('reason').value.trim() || undefined });
    }));
    row.appendChild(button(u.muted ? 'Unmute' : 'Mute', function () {
      act(u.muted ? 'unmute' : 'mute', { nick: u.nick });
    }));
    row.appendChild(button('Ban', function () {
      var minutes = +$('banFor').value;
      if (!window.confirm('Ban ' + u.nick + "'s device " + $('banFor').selectedOptions[0].text + '?')) return;
      act('ban', { nick: u.nick, minutes: minutes, reason: $('reason').value.trim() || undefined });
    }, 'danger'));
    row.querySelectorAll('button').forEach(function (b) { b.setAttribute('aria-label', b.textContent + ' ' + u.nick); });
    td.appendChild(row); tr.appendChild(td); body.appendChild(tr);
  });
  $('noUsers').hidden = users.length > 0;
}

function renderBans(bans, mutes) {
  var ul = $('bans'); ul.textContent = '';
  bans.forEach(function (b) {
    var li = el('li', null, (b.kind === 'device' ? 'Device ' + b.value + (b.nick ? ' (' + b.nick + ')' : '')
                                                 : 'Address ' + b.value) +
                ', ' + (b.until ? 'until ' + when(b.until) : 'until lifted') + (b.reason ? ' — ' + b.reason : '') + ' ');
    var un = button('Unban', function () { act('unban', { id: b.id }); });
    un.setAttribute('aria-label', 'Unban ' + (b.nick || b.value));
    li.appendChild(un); ul.appendChild(li);
  });
  mutes.forEach(function (m) {
    var li = el('li', null, 'Muted: ' + m.nick + ' (device ' + m.device + ') ');
    var un = button('Unmute', function () { act('unmute', { nick: m.nick }); });
    un.setAttribute('aria-label', 'Unmute ' + m.nick);
    li.appendChild(un); ul.appendChild(li);
  });
  if (!ul.firstChild) ul.appendChild(el('li', 'muted', 'No bans, nobody muted.'));
}

function renderRecent(msgs) {
  var body = $('recent').tBodies[0]; body.textContent = '';
  msgs.slice().reverse().forEach(function (m) {
    var tr = el('tr');
    tr.appendChild(el('td', null, String(m.id)));
    tr.appendChild(el('td', null, (m.from || '?') + (m.to ? ' → ' + m.to : '')));
    var text = m.deleted ? 'message removed' : m.private ? 'private message' :
      (m.text || '') + (m.file ? ' [' + m.file.name + ', ' + size(m.file.size) + ']' : '') + (m.edited ? ' (edited)' : '');
    tr.appendChild(el('td', 't', text));
    var td = el('td');
    if (!m.deleted) {
      var b = button('Remove', function () { if (window.confirm('Remove message ' + m.id + ' for everyone?')) act('delete', { id: m.id }); }, 'danger');
      b.setAttribute('aria-label', 'Remove message ' + m.id);
      td.appendChild(b);
    }
    tr.appendChild(td); body.appendChild(tr);
  });
}

$('roomForm').addEventListener('submit', function (e) {
  e.preventDefault();
  act('room', { name: $('roomName').value.trim(), topic: $('roomTopic').value.trim() })
    .then(function () { S.editing = false; toast('Saved.'); }, function () {});
});
['roomName', 'roomTopic'].forEach(function (id) {
  $(id).addEventListener('input', function () { S.editing = true; });
});
$('lockBtn').addEventListener('click', function () {
  act('room', { locked: !(S.state && S.state.room && S.state.room.locked) });
});
$('rotateBtn').addEventListener('click', function () {
  if (window.confirm('Replace the pairing code? Phones that have not joined yet need the new one.')) {
    act('rotate_token').then(function () { toast('New pairing code.'); }, function () {});
  }
});
$('banAddr').addEventListener('submit', function (e) {
  e.preventDefault();
  var a = $('addr').value.trim(); if (!a) return;
  act('ban', { address: a, minutes: +$('banFor').value, reason: $('reason').value.trim() || undefined })
    .then(function () { $('addr').value = ''; }, function () {});
});
$('delForm').addEventListener('submit', function (e) {
  e.preventDefault();
  var id = parseInt($('delId').value, 10); if (!id) return;
  act('delete', { id: id }).then(function () { $('delId').value = ''; toast('Removed.'); }, function () {});
});
$('clearBtn').addEventListener('click', function () {
  var typed = window.prompt('This removes every message and file for everyone. Type "clear" to confirm.');
  if (typed === 'clear') act('clear', { confirm: 'clear' }).then(function () { toast('History cleared.'); }, function () {});
});

refresh();
setInterval(refresh, POLL_MS);
})();
