/*
 * django-instrumented stats overlay: the source of the bookmarklet.
 *
 * Run from the bookmarks bar on any page of the site, it asks the dashboard's JSON API (same origin,
 * session cookie) for the stats of the view that serves this page and shows them in a small box.
 * Clicking the bookmark again closes the box.
 *
 * Rules that keep it working on pages with a strict Content-Security-Policy or Trusted Types:
 * no injected <script>, no innerHTML, no <style> element or style attribute; DOM built with
 * createElement/textContent, styles through a constructable stylesheet inside an open shadow root
 * (also isolating it from the page's CSS) and CSSOM for the host's position.
 *
 * This is the body of a function: bookmarklet/build.py wraps it in an IIFE (hence the top-level
 * `return`) and turns it into the javascript: URL. Write explicit semicolons (the
 * build joins lines), no regex or template literals (the build refuses them), no secrets (bookmarks
 * sync across devices, and page scripts can read anything the bookmarklet does).
 */
/* M: the dashboard's mount path, replaced by the dashboard when it serves the link. */
const M = '__INSTRUMENTED_MOUNT__', d = document, old = d.getElementById('instrumented-overlay');
/* A second click closes the overlay. */
if (old) return old.remove();
/* h: the host element; its position is set through CSSOM, which no style-src blocks. */
const h = d.createElement('div'), hs = h.style, root = h.attachShadow({mode: 'open'});
h.id = 'instrumented-overlay';
hs.position = 'fixed';
hs.top = hs.right = '9px';
hs.zIndex = 2147483647;
try {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(
    ':host{all:initial}' +
    'div{font:13px/1.5 system-ui,sans-serif;color:#333;background:#fff;padding:8px 12px;border-radius:8px;' +
    'box-shadow:0 4px 20px #0005;min-width:250px}' +
    'b,a{color:#417690}button{float:right;border:0;background:0;font-size:18px;cursor:pointer}' +
    'td+td{text-align:right;padding-left:16px}.w{color:#ba2121}button.p{float:none;font-size:13px;color:#417690;padding:0}'
  );
  root.adoptedStyleSheets = [sheet];
} catch (e) {
  /* A browser without constructable stylesheets: unstyled but readable. */
}
/* el: append a new element to p, with an optional class and text (textContent: Trusted Types safe). */
const el = (p, tag, text, cls) => {
  const e = p.appendChild(d.createElement(tag));
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};
const box = el(root, 'div');
el(box, 'button', '\u00d7').onclick = () => h.remove();
el(box, 'b', 'View stats');
const body = el(box, 'p', 'Loading\u2026');
(d.body || d.documentElement).appendChild(h);
/* link: a link at the end of the overlay. */
const link = (href, text) => el(body, 'a', text).href = href;
/* ms: milliseconds for display. */
const ms = (v) => v.toFixed(1) + ' ms';
/* show: draw the API's answer (j) for the HTTP status; explain 401, 403 and missing data. */
const show = (status, j) => {
  const s = j.stats;
  body.textContent = '';
  if (status == 401) return link(M, 'Log in as a staff user to see stats');
  if (status == 403) return el(body, 'p', 'Your account may not see stats.', 'w');
  if (j.error || !s) return el(body, 'p', 'No data: ' + (j.error || 'HTTP ' + status), 'w');
  el(body, 'p', j.view);
  if (j.partial) el(body, 'p', 'Partial: no answer from memcached ' + j.missing.join(', '), 'w');
  if (j.no_data) el(body, 'p', 'No requests in the last ' + j.window_seconds + ' s.');
  else {
    const t = el(body, 'table'), l = s.latency_ms;
    [
      ['requests (' + j.window_seconds + ' s)', s.requests],
      ['errors', s.errors, s.errors],
      ['p50 / p95', ms(l.p50) + ' / ' + ms(l.p95) + (l.samples < 20 ? ' (n=' + l.samples + ')' : '')],
      ['p99 / max', ms(l.p99) + ' / ' + ms(l.max)],
      ['queries / request', s.queries.mean + ' (max ' + s.queries.max + ')'],
      ['DB time', ms(s.db_time_ms)],
      ['N+1 requests', s.n_plus_one, s.n_plus_one]
    ].forEach((r) => {
      const tr = el(t, 'tr', null, r[2] && 'w');
      el(tr, 'td', r[0]);
      el(tr, 'td', r[1]);
    });
    /* The N+1 suspects (the first 3, then how many more) and the top write per row: call site and fix. */
    const n = s.n_plus_one_suspects || [], more = n.length - 3 + (s.n_plus_one_suspects_more || 0);
    n.slice(0, 3).concat((s.write_suspects || []).slice(0, 1)).forEach((q) => {
      const c = q.call_sites[0] || {}, w = 'hint' in q, h = w ? q.hint : c.hint;
      el(body, 'p', (w ? 'Writes per row' : 'N+1') + ' at ' + (c.site || q.sql.slice(0, 60)) + (h ? ': ' + (w ? 'one ' : 'add .') + h : ''), 'w');
    });
    if (more > 0) el(body, 'p', 'and ' + more + ' more N+1 suspects', 'w');
  }
  link(j.detail_url, 'Full view page');
  /* The view page's waterfalls of its slowest requests. */
  if (!j.no_data) link(j.detail_url + '#samples', 'Slowest requests');
};
/* Profile this page: ask for it again with the profile header; only a superuser gets a profile reference back
 * (or the reason it was refused), which becomes a link to the profile. */
const pb = el(box, 'button', 'Profile this page', 'p'), out = el(box, 'p');
pb.onclick = () => {
  out.textContent = 'Profiling\u2026';
  fetch(location.href, {headers: {'X-Instrumented-Profile': '1'}}).then((r) => {
    const ref = r.headers.get('X-Instrumented-Profile');
    out.textContent = ref ? '' : r.headers.get('X-Instrumented-Profile-Refused') || 'Not profiled (superusers only)';
    if (ref) el(out, 'a', 'Open profile ' + ref).href = M + 'profiles/' + encodeURIComponent(ref) + '/';
  }).catch((e) => out.textContent = 'Profile failed: ' + e);
};
/* Same-origin request with the session cookie; the server resolves the path, it never fetches the page. */
fetch(M + 'api/view?path=' + encodeURIComponent(location.pathname))
  .then((r) => r.json().then((j) => show(r.status, j), () => show(r.status, {})))
  .catch((e) => show(0, {error: 'stats API unreachable: ' + e}));
