/*
 * django-instrumented dashboard: keeps the views table fresh from the JSON API, sorts and filters it.
 *
 * Plain JavaScript in a static file, no library: the page runs under script-src 'self' with no inline
 * script or handler. The DOM is built with createElement/textContent only (view names and routes are
 * data, never markup). Settings come from data- attributes on the table.
 */
'use strict';

(function () {
  const table = document.getElementById('instr-table');
  if (!table) {
    return;
  }
  const api = table.dataset.api;
  const detailBase = table.dataset.detail;
  const refreshMs = Math.max(parseInt(table.dataset.refresh, 10) || 3000, 1000);
  const tbody = table.tBodies[0];
  const filterBox = document.getElementById('instr-filter');
  const statusLine = document.getElementById('instr-status');
  const errorBox = document.getElementById('instr-error');
  const partialBox = document.getElementById('instr-partial');
  const workTable = document.getElementById('instr-work');
  const workSection = document.getElementById('instr-work-section');
  const queueTable = document.getElementById('instr-queue');
  const queueSection = document.getElementById('instr-queue-section');

  let doc = null; // the last reader document received
  let sortKey = 'requests';
  let descending = true;
  let timer = null;
  let stopped = false;

  /* Derived numbers, as the server's derived() computes them for the first render. Rates are over the
     span the data covers (covered_seconds), not the whole window: 40 s of data is not 300 s of traffic. */
  function derive(v, spanSeconds) {
    const busy = v.latency_ms.mean * v.requests;
    return {
      rpm: (v.requests * 60) / Math.max(spanSeconds, 1),
      errorRate: v.requests ? v.errors / v.requests : 0,
      dbShare: busy > 0 ? Math.min(v.db_time_ms / busy, 1) : 0,
      cacheHitRate: v.cache ? v.cache.hit_rate : null,
      httpMs: v.http && v.requests ? v.http.time_ms / v.requests : 0,
      templateMs: v.templates ? v.templates.mean_ms : 0,
    };
  }

  const SORTS = {
    view: (v) => v.view.toLowerCase(),
    requests: (v) => v.requests,
    rpm: (v) => v.requests,
    errors: (v, d) => d.errorRate,
    p50: (v) => v.latency_ms.p50,
    p95: (v) => v.latency_ms.p95,
    p99: (v) => v.latency_ms.p99,
    max: (v) => v.latency_ms.max,
    queries: (v) => v.queries.mean,
    qmax: (v) => v.queries.max,
    db: (v, d) => d.dbShare,
    cache: (v, d) => (d.cacheHitRate === null ? -1 : d.cacheHitRate),
    http: (v, d) => d.httpMs,
    queue: (v) => (v.queue && v.queue.requests ? v.queue.p95_ms : -1),
    template: (v, d) => d.templateMs,
    n1: (v) => v.n_plus_one,
  };

  function cell(tr, text, className) {
    const td = document.createElement('td');
    if (text !== null && text !== undefined) {
      td.textContent = text;
    }
    if (className) {
      td.className = className;
    }
    tr.appendChild(td);
    return td;
  }

  /* A view name or route as text with a line-break opportunity after each ": . / _ -" (the server's
     |breakable filter): a narrow column wraps "command:collectstatic" after the colon, never mid-word. */
  function breakable(element, text) {
    const parts = String(text).split(/(?<=[:./_-])/);
    parts.forEach((part, i) => {
      if (i) {
        element.appendChild(document.createElement('wbr'));
      }
      element.appendChild(document.createTextNode(part));
    });
    return element;
  }

  const fixed1 = (n) => n.toFixed(1);
  /* Percentiles resting on fewer requests than this show their count (reader.FEW_SAMPLES). */
  const FEW_SAMPLES = 20;
  const percent = (n) => Math.round(n * 100) + ' %';

  function render() {
    if (!doc) {
      return;
    }
    const windowSeconds = doc.window_seconds;
    const spanSeconds = doc.covered_seconds || windowSeconds;
    const needle = (filterBox ? filterBox.value : '').trim().toLowerCase();
    let rows = doc.views.map((v) => ({v: v, d: derive(v, spanSeconds)}));
    if (needle) {
      rows = rows.filter((r) => (r.v.view + ' ' + r.v.route).toLowerCase().includes(needle));
    }
    // Commands, tasks and record() blocks go to their own table: never a view's worst p95 or N+1 badge.
    const work = rows.filter((r) => (r.v.kind || 'request') !== 'request');
    rows = rows.filter((r) => (r.v.kind || 'request') === 'request');
    renderWork(work);
    renderQueue(doc.queue);
    const key = SORTS[sortKey] || SORTS.requests;
    rows.sort((a, b) => {
      const x = key(a.v, a.d);
      const y = key(b.v, b.d);
      const order = x < y ? -1 : x > y ? 1 : a.v.view < b.v.view ? -1 : 1;
      return descending ? -order : order;
    });
    // The cache and HTTP columns show only when some view of the document has such calls.
    const views = doc.views.filter((v) => (v.kind || 'request') === 'request');
    const optional = {
      cache: views.some((v) => v.cache && v.cache.calls),
      http: views.some((v) => v.http && v.http.calls),
      queue: views.some((v) => v.queue && v.queue.requests),
      template: views.some((v) => v.templates && v.templates.renders),
    };
    for (const th of table.tHead.querySelectorAll('th[data-optional]')) {
      th.hidden = !optional[th.dataset.optional];
    }
    const worstP95 = rows.length > 1 ? Math.max(...rows.map((r) => r.v.latency_ms.p95)) : -1;
    const fragment = document.createDocumentFragment();
    for (const {v, d} of rows) {
      const tr = document.createElement('tr');
      tr.dataset.view = v.view;
      tr.dataset.requests = String(v.requests);
      if (v.errors) {
        tr.className = 'instr-bad';
      } else if (v.n_plus_one) {
        tr.className = 'instr-warn';
      }
      const first = cell(tr, null, 'instr-left');
      const link = document.createElement('a');
      link.href = detailBase + encodeURIComponent(v.view);
      breakable(link, v.view);
      const route = document.createElement('span');
      route.className = 'instr-route';
      breakable(route, v.route);
      first.append(link, route);
      cell(tr, String(v.requests));
      cell(tr, fixed1(d.rpm));
      cell(tr, percent(d.errorRate));
      cell(tr, fixed1(v.latency_ms.p50));
      const p95 = cell(tr, fixed1(v.latency_ms.p95), v.latency_ms.p95 === worstP95 && worstP95 > 0 ? 'instr-worst' : '');
      const samples = v.latency_ms.samples;
      if (samples < FEW_SAMPLES) {
        /* Percentiles of few requests (nearest rank: p95 of 3 is the slowest): say how many. */
        const few = document.createElement('span');
        few.className = 'instr-few';
        few.title = 'percentiles of ' + samples + ' request' + (samples === 1 ? '' : 's') + ' (nearest rank)';
        few.textContent = 'n=' + samples;
        p95.append(' ', few);
      }
      cell(tr, fixed1(v.latency_ms.p99));
      cell(tr, fixed1(v.latency_ms.max));
      cell(tr, fixed1(v.queries.mean));
      cell(tr, String(v.queries.max));
      cell(tr, percent(d.dbShare));
      const cacheCell = cell(tr, d.cacheHitRate === null ? '' : percent(d.cacheHitRate));
      cacheCell.dataset.optional = 'cache';
      cacheCell.hidden = !optional.cache;
      const httpCell = cell(tr, v.http && v.http.calls ? fixed1(d.httpMs) : '');
      httpCell.dataset.optional = 'http';
      httpCell.hidden = !optional.http;
      const queueCell = cell(tr, v.queue && v.queue.requests ? fixed1(v.queue.p95_ms) : '');
      queueCell.dataset.optional = 'queue';
      queueCell.hidden = !optional.queue;
      const templateCell = cell(tr, v.templates && v.templates.renders ? fixed1(d.templateMs) : '');
      templateCell.dataset.optional = 'template';
      templateCell.hidden = !optional.template;
      const flag = cell(tr, null);
      if (v.n_plus_one) {
        const badge = document.createElement('span');
        badge.className = 'instr-flag';
        badge.textContent = 'N+1 \u00d7' + v.n_plus_one;
        flag.appendChild(badge);
      }
      if (v.writes_per_row) {
        /* A write per row in a loop: its own (amber) finding, fixed by bulk_create / bulk_update. */
        const writes = document.createElement('span');
        writes.className = 'instr-flag instr-flag-write';
        writes.textContent = 'writes per row \u00d7' + v.writes_per_row;
        flag.append(flag.childNodes.length ? ' ' : '', writes);
      }
      fragment.appendChild(tr);
    }
    if (!rows.length && (needle || !doc.error)) {  // "No data: why" is said above the table already
      const tr = document.createElement('tr');
      tr.className = 'instr-empty';
      const td = cell(tr, needle ? 'No view matches \u201c' + needle + '\u201d.' : 'No requests recorded in the last ' + windowSeconds + ' s.');
      td.colSpan = 15;
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
    for (const th of table.tHead.rows[0].cells) {
      if (th.dataset.key === sortKey) {
        th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
      } else {
        th.removeAttribute('aria-sort');
      }
    }
  }

  /* The commands and tasks table: by runs, then name; errors in red, repeated SQL as a plain count. */
  function renderWork(rows) {
    if (!workTable) {
      return;
    }
    rows.sort((a, b) => b.v.requests - a.v.requests || (a.v.view < b.v.view ? -1 : 1));
    const fragment = document.createDocumentFragment();
    for (const {v, d} of rows) {
      const tr = document.createElement('tr');
      tr.dataset.view = v.view;
      tr.dataset.kind = v.kind;
      if (v.errors) {
        tr.className = 'instr-bad';
      }
      const first = cell(tr, null, 'instr-left');
      const link = document.createElement('a');
      link.href = detailBase + encodeURIComponent(v.view);
      breakable(link, v.view);
      first.appendChild(link);
      cell(tr, String(v.requests));
      cell(tr, String(v.errors));
      cell(tr, fixed1(v.latency_ms.p50));
      cell(tr, fixed1(v.latency_ms.p95));
      cell(tr, fixed1(v.latency_ms.max));
      cell(tr, fixed1(v.queries.mean));
      cell(tr, String(v.queries.max));
      cell(tr, percent(d.dbShare));
      cell(tr, v.n_plus_one ? v.n_plus_one + (v.n_plus_one === 1 ? ' run' : ' runs') : '');
      fragment.appendChild(tr);
    }
    workTable.tBodies[0].replaceChildren(fragment);
    if (workSection) {
      workSection.hidden = !rows.length;
    }
  }

  /* Request queue time: every process together, then each process (the reader sorts them, slowest p95 first). */
  function renderQueue(queue) {
    if (!queueTable) {
      return;
    }
    const stamped = queue && (queue.requests || queue.ignored);
    if (queueSection) {
      queueSection.hidden = !stamped;
    }
    if (!stamped) {
      return;
    }
    const fragment = document.createDocumentFragment();
    const row = (label, q, live) => {
      const tr = document.createElement('tr');
      const first = cell(tr, null, 'instr-left');
      if (label === null) {
        first.textContent = 'every process';
        tr.className = 'instr-total';
      } else {
        const code = document.createElement('code');
        code.textContent = label;
        first.appendChild(code);
        if (!live) {
          const note = document.createElement('span');
          note.className = 'instr-sub';
          note.textContent = ' (stopped)';
          first.appendChild(note);
        }
      }
      cell(tr, String(q.requests));
      cell(tr, String(q.ignored));
      cell(tr, fixed1(q.p50_ms));
      cell(tr, fixed1(q.p95_ms));
      cell(tr, fixed1(q.max_ms));
      fragment.appendChild(tr);
    };
    row(null, queue, true);
    for (const q of queue.processes || []) {
      row(q.process, q, q.live);
    }
    queueTable.tBodies[0].replaceChildren(fragment);
  }

  /* "3 live processes (5 in the window)": the workers sending stats now, and every process with data. */
  function processesText(body) {
    const live = body.processes_live || 0;
    const text = live + (live === 1 ? ' live process' : ' live processes');
    return body.processes !== live ? text + ' (' + body.processes + ' in the window)' : text;
  }

  function showError(message) {
    if (!errorBox) {
      return;
    }
    errorBox.hidden = !message;
    errorBox.textContent = message ? 'No data: ' + message : '';
  }

  /* "Last 300 s", or "Last 300 s (data for 42 s)" while the data covers less than the window. */
  function spanText(body) {
    const covered = body.covered_seconds;
    const text = 'Last ' + body.window_seconds + ' s';
    return covered && covered < body.window_seconds ? text + ' (data for ' + Math.round(covered) + ' s)' : text;
  }

  // The site's TIME_ZONE, as the server renders times (display.local_time): never the browser's zone.
  function siteTime(iso) {
    try {
      const parts = {};
      new Intl.DateTimeFormat('en-US', {
        timeZone: table.dataset.tz || 'UTC', hourCycle: 'h23', timeZoneName: 'short',
        year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
      }).formatToParts(new Date(iso)).forEach(function (part) { parts[part.type] = part.value; });
      return parts.year + '-' + parts.month + '-' + parts.day + ' ' + parts.hour + ':' + parts.minute + ':' +
        parts.second + ' ' + parts.timeZoneName;
    } catch (error) {
      return iso;
    }
  }

  function setStatus(text) {
    if (statusLine) {
      statusLine.textContent = text;
    }
  }

  async function refresh() {
    timer = null;
    if (document.hidden) {
      schedule();
      return;
    }
    try {
      const response = await fetch(api, {headers: {Accept: 'application/json'}, cache: 'no-store'});
      if (response.status === 401 || response.status === 403) {
        stopped = true;
        showError('your session ended or may no longer see stats; reload the page to log in again.');
        return;
      }
      const body = await response.json();
      doc = body;
      showError(body.error || '');
      if (partialBox) {
        partialBox.hidden = !body.partial;
        partialBox.textContent = body.partial
          ? 'Partial: no answer from memcached ' + (body.missing || []).join(', ') + '; what it holds is missing.'
          : '';
      }
      setStatus(spanText(body) + ' \u00b7 ' + processesText(body) + ' \u00b7 updated ' + siteTime(body.generated_at));
      render();
    } catch (error) {
      setStatus('Update failed (' + error + '); retrying\u2026');
    }
    schedule();
  }

  function schedule() {
    if (!stopped && timer === null) {
      timer = setTimeout(refresh, refreshMs);
    }
  }

  table.tHead.addEventListener('click', (event) => {
    const th = event.target.closest('th[data-key]');
    if (!th) {
      return;
    }
    const key = th.dataset.key;
    descending = key === sortKey ? !descending : key !== 'view';
    sortKey = key;
    render();
  });
  if (filterBox) {
    filterBox.addEventListener('input', render);
  }
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      refresh();
    }
  });
  refresh();
})();
