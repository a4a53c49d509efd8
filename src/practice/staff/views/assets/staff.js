// ignis staff page (issue 14): live updates by short polling, and done/undo without a reload.
// Progressive enhancement only: without this file the page works with plain links and forms.
(function () {
  'use strict';
  var main = document.getElementById('live');
  if (!main || !window.fetch || !window.URLSearchParams) { return; }
  var meta = document.querySelector('meta[name="staff-etag"]');
  var etag = meta ? meta.getAttribute('content') : null;
  // A poll that started before a done/undo POST may carry the state from before it and
  // arrive after the POST's answer: polls are numbered, and one older than the last submit
  // is dropped (and none starts while a submit is under way).
  var polling = false;
  var submitting = 0;
  var seq = 0;
  var lastSubmit = 0;
  var POLL_MS = 1000;
  // While the server cannot answer (a restart behind nginx: 502; a store stall: 503; 429) the
  // page stays as it is, marked stale, and polls back off to 2, 4 ... 32 s. Reloading it
  // instead would replace it with an error page that never updates again (review point 1).
  var failures = 0;
  var pauseUntil = 0;
  function trouble() {
    document.body.classList.add('stale');
    failures = Math.min(failures + 1, 5);
    pauseUntil = Date.now() + POLL_MS * Math.pow(2, failures);
  }
  function healthy() {
    failures = 0;
    pauseUntil = 0;
    document.body.classList.remove('stale');
  }
  function unavailable(r) { return r.status >= 500 || r.status === 429; }

  // A reply without our ETag is not the fragment (e.g. the login page after the session
  // expired): load the page properly instead of pasting it in.
  function apply(r) {
    var tag = r.headers.get('ETag');
    if (!tag) { window.location.reload(); return null; }
    etag = tag;
    return r.text().then(function (html) {
      main.innerHTML = html;
      tick();
      var view = main.firstElementChild;
      var title = view && view.getAttribute('data-title');
      if (title) { document.title = title; }
    });
  }

  // Running calls carry their start (`data-start`, UTC seconds) instead of a duration, so
  // the fragment does not change every second; the durations tick here.
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function tick() {
    var now = Math.floor(Date.now() / 1000);
    var spans = main.querySelectorAll('[data-start]');
    for (var i = 0; i < spans.length; i++) {
      var s = Math.max(0, now - parseInt(spans[i].getAttribute('data-start'), 10));
      var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
      spans[i].textContent = (h ? h + ':' + pad(m) : m) + ':' + pad(s % 60);
    }
  }

  function poll() {
    if (polling || submitting || document.hidden || Date.now() < pauseUntil) { return; }
    polling = true;
    var mine = ++seq;
    var headers = {};
    if (etag) { headers['If-None-Match'] = etag; }
    fetch('/staff/live' + window.location.search, {
      headers: headers, credentials: 'same-origin', cache: 'no-store'
    }).then(function (r) {
      if (unavailable(r)) { trouble(); return null; }
      healthy();
      if (mine < lastSubmit) { return null; }
      if (r.status === 200) { return apply(r); }
      // Anything else (a 4xx) means the page itself changed: load it properly.
      if (r.status !== 304) { window.location.reload(); }
      return null;
    }).catch(trouble).then(function () { polling = false; });
  }

  main.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains('act')) { return; }
    ev.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    body.set('reply', 'fragment');
    var token = form.elements.csrf ? form.elements.csrf.value : '';
    submitting += 1;
    lastSubmit = ++seq;
    fetch(form.action, {
      method: 'POST', body: body, credentials: 'same-origin',
      headers: { 'X-CSRF-Token': token }
    }).then(function (r) {
      if (r.status === 200) { healthy(); return apply(r); }
      // Maybe not done (no audit row, no change), maybe done with its answer withheld: the
      // page is marked stale and asks for the real state at once.
      if (unavailable(r)) { trouble(); pauseUntil = 0; return null; }
      window.location.reload();
      return null;
    }).catch(function () {
      form.submit();
    }).then(function () { submitting -= 1; });
  });

  tick();
  window.setInterval(function () { tick(); poll(); }, POLL_MS);
}());
