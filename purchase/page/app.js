// The sale page of a Flux-Order flash sale (docs/sale-page.md). No
// framework: a few hundred lines drive the purchase API of the pod that
// served this page. The seat map is virtualized: seat states live in a
// Uint8Array, and only the seats in view are DOM nodes, recycled on scroll.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const STATES = ['available', 'held', 'sold'];
  const MESSAGES = {
    ticket_sold: 'Sorry, that seat is already sold. Please pick another one.',
    ticket_held: 'Another buyer is holding that seat while they pay. It comes back if they do not complete checkout.',
    ticket_locked: 'Another buyer is taking that seat this very moment. Pick another one, or try this one again in a second.',
    buyer_limit_reached: 'You have reached the maximum number of tickets per buyer.',
    sale_paused: 'The sale is paused for a moment. Stay on this page: it continues here.',
    sale_ended: 'The sale has ended.',
    sale_not_started: 'The sale has not started yet. Stay on this page: it opens here.',
    sold_out: 'Sold out: every seat has been sold.',
    hold_expired: 'Your hold expired and the seat went back on sale. Please pick a seat again.',
    hold_not_found: 'That hold no longer exists. Please pick a seat again.',
    holds_disabled: 'Seats are bought directly in this sale: click a seat to buy it.',
    too_many_requests: 'Too many requests from your connection. Please wait a moment and try again.',
    proof_required: 'The waiting room asks your browser to solve a puzzle first. Please try again.',
    proof_invalid: 'The waiting room could not check your browser\'s puzzle. Please try again.',
    pass_required: 'Please join the waiting room first: your pass from the queue lets you buy.',
    pass_invalid: 'Your waiting-room pass is no longer valid (expired, or for another buyer id). Please join the queue again.',
    auth_required: 'Please sign in first: this sale sells only to signed-in buyers. Open it from the site where you signed in.',
    auth_invalid: 'Your sign-in has expired or is not valid for this sale. Please sign in again and reopen the sale page.',
    buyer_mismatch: 'The buyer id is not the account you signed in with. Please reload the page.',
    queue_not_found: 'Your place in the queue could not be found. Please join again.',
    queue_closed: 'The waiting room is closed.',
    ticket_not_found: 'There is no seat with that number.',
    invalid_request: 'That did not work: please check your buyer id.',
    order_pending: 'Your order is being confirmed; its outcome is not known yet.',
    order_not_found: 'That order could not be found.',
    order_cancelled: 'That order was cancelled (its payment did not go through). Please pick a seat again.',
    not_found: 'The ticket service does not know that request. Please reload the page.',
    method_not_allowed: 'The ticket service does not know that request. Please reload the page.',
    unavailable: 'The ticket service is busy or briefly unavailable. Please try again in a moment.',
    hold_active: 'You are holding a seat: confirm or release it first.',
    buyer_missing: 'Please enter your buyer id first.',
    network: 'Your connection to the sale was interrupted. Please try again.',
  };

  const S = {
    facts: null, offset: 0, // server clock minus ours, in ms
    tickets: 0, states: new Uint8Array(1), counts: null,
    pass: null, queueId: null, queueTimer: 0,
    hold: null, mine: new Set(), busy: false, focusSeat: 1,
  };
  const now = () => Date.now() + S.offset;
  const store = (k, v) => { try { v === null ? sessionStorage.removeItem(k) : sessionStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* private mode */ } };
  const load = (k) => { try { return JSON.parse(sessionStorage.getItem(k)); } catch (e) { return null; } };

  // ---- identity --------------------------------------------------------
  // A sale with spec.buyerAuth sells only to buyers the embedding site
  // signed in (docs/sale-page.md). The site hands the buyer's identity token
  // in the page URL's fragment, #access_token=<JWT>, which no browser sends
  // to any server: the page keeps it for this tab (sessionStorage), takes it
  // out of the address bar and history, and sends it as Authorization:
  // Bearer with every request; the buyer id is then the token's subject. A
  // new token (the old one expired) is handed the same way: reopen the page
  // with a new fragment; requests in doubt carry on after the reload.
  const identity = (() => {
    const h = new URLSearchParams(location.hash.slice(1));
    let token = h.get('access_token');
    if (token) {
      store('fo.token', token);
      h.delete('access_token');
      const rest = h.toString();
      history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    } else {
      token = load('fo.token');
    }
    if (!token) return null;
    try {
      const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
      return typeof claims.sub === 'string' && claims.sub ? { token, sub: claims.sub } : null;
    } catch (e) {
      return null; // not a JWT: the server would refuse it anyway
    }
  })();

  // ---- buyer id --------------------------------------------------------
  const buyerInput = $('buyer');
  const randomHex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');
  buyerInput.value = identity ? identity.sub : localStorage.getItem('fo.buyer') || 'buyer-' + randomHex(4);
  buyerInput.readOnly = !!identity;
  const buyer = () => buyerInput.value.trim();
  buyerInput.addEventListener('change', () => {
    localStorage.setItem('fo.buyer', buyer());
    restoreQueue();
    restoreOrders();
  });
  localStorage.setItem('fo.buyer', buyer());

  // ---- messages --------------------------------------------------------
  function problem(code) {
    const el = $('problem');
    el.dataset.code = code;
    el.textContent = MESSAGES[code] || 'Something went wrong (' + code + ').';
    el.hidden = false;
  }
  function clearProblem() {
    const el = $('problem');
    el.hidden = true;
    el.dataset.code = '';
  }
  function notice(text) {
    const el = $('notice');
    el.textContent = text || '';
    el.hidden = !text;
  }

  // ---- the API ---------------------------------------------------------
  async function api(method, path, body, withPass, key, extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra);
    if (body) headers['Content-Type'] = 'application/json';
    // With identity the token takes Authorization and the waiting room's
    // pass its own header; without, the pass is the Bearer token.
    if (identity) headers.Authorization = 'Bearer ' + identity.token;
    if (withPass && S.pass) {
      if (identity) headers['Flux-Order-Pass'] = S.pass;
      else headers.Authorization = 'Bearer ' + S.pass;
    }
    if (key) headers['Idempotency-Key'] = key;
    let r;
    try {
      r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, cache: 'no-store' });
    } catch (e) {
      return { ok: false, code: 'network' };
    }
    let data = null;
    try { data = r.status === 204 ? null : await r.json(); } catch (e) { /* not JSON */ }
    const retry = Number(r.headers.get('Retry-After'));
    if (r.ok) return { ok: true, status: r.status, data, retry };
    return { ok: false, status: r.status, code: (data && data.code) || 'unavailable', data, retry,
      challenge: r.headers.get('Flux-Order-Challenge'), difficulty: Number(r.headers.get('Flux-Order-Difficulty')) };
  }

  // ---- sale facts and phase ---------------------------------------------
  function setFacts(f) {
    S.facts = f;
    document.title = f.displayName;
    $('name').textContent = f.displayName;
    const hold = f.holdTTL > 0;
    const pick = $('pick-button');
    pick.dataset.action = hold ? 'hold' : 'buy';
    pick.textContent = hold ? 'Hold' : 'Buy';
    if (!f.waitingRoom || !f.waitingRoom.enabled) stopQueue();
    update();
  }

  function phase() {
    const f = S.facts;
    if (!f) return 'loading';
    const t = now();
    if (f.startsAt && t < Date.parse(f.startsAt)) return 'before';
    if (f.endsAt && t >= Date.parse(f.endsAt)) return 'ended';
    if (S.counts && S.counts.available === 0 && S.counts.held === 0) return 'soldout';
    if (f.paused) return 'paused';
    return 'onsale';
  }

  function duration(ms) {
    let s = Math.max(0, Math.ceil(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const two = (n) => String(n).padStart(2, '0');
    return (d ? d + 'd ' : '') + (d || h ? two(h) + ':' : '') + two(m) + ':' + two(s);
  }

  const waitingRoomOn = () => !!(S.facts && S.facts.waitingRoom && S.facts.waitingRoom.enabled);

  function update() {
    const f = S.facts;
    if (!f) return;
    const p = phase();
    const labels = { before: 'Opens soon', onsale: 'On sale', paused: 'Paused', soldout: 'Sold out', ended: 'Sale ended' };
    $('phase').textContent = labels[p] || '';
    document.body.dataset.phase = p;
    $('countdown').hidden = p !== 'before';
    if (p === 'before') {
      $('countdown-time').textContent = duration(Date.parse(f.startsAt) - now());
      $('countdown-at').textContent = new Date(Date.parse(f.startsAt)).toLocaleString();
    }
    $('seats').hidden = p === 'before' || p === 'loading';
    const banners = { soldout: 'Sold out: every seat has been sold.', ended: 'The sale has ended. Thank you!', paused: 'The sale is paused for a moment. Stay on this page: it continues here.' };
    $('banner').textContent = banners[p] || '';
    $('banner').hidden = !banners[p];
    $('pick').hidden = p === 'soldout' || p === 'ended';
    $('seats-title').textContent = p === 'onsale' ? 'Choose a seat' : 'Seats';
    // The queue: while the buyer has no pass and seats may still be had.
    const queueOpen = waitingRoomOn() && !S.pass && (p === 'before' || p === 'onsale' || p === 'paused');
    $('queue').hidden = !queueOpen;
    if (queueOpen) {
      const from = f.waitingRoom.joinFrom ? Date.parse(f.waitingRoom.joinFrom) : 0;
      const join = $('join');
      $('leave').hidden = !S.queueId;
      if (S.queueId) {
        join.hidden = true;
      } else if (from && now() < from) {
        join.hidden = false;
        join.disabled = true;
        $('queue-info').textContent = 'The queue opens in ' + duration(from - now()) + '.';
      } else {
        join.hidden = false;
        join.disabled = false;
        $('queue-info').textContent = 'Join the queue to get your turn to pick a seat.';
      }
    }
    if (S.hold) {
      const left = Date.parse(S.hold.expiresAt) - now();
      $('checkout-left').textContent = duration(left);
      if (left <= 0) {
        endHold();
        problem('hold_expired');
      }
    }
    if (!$('seats').hidden) schedule();
  }

  // ---- the seat map ------------------------------------------------------
  const grid = $('grid');
  const inner = $('grid-inner');
  const pool = []; // recycled seat buttons, in order of the seats they show
  let pitch = 44; let cols = 1; let raf = 0;

  function measure() {
    const cs = getComputedStyle(document.documentElement);
    pitch = parseFloat(cs.getPropertyValue('--cell')) + parseFloat(cs.getPropertyValue('--gap'));
    cols = Math.max(1, Math.floor((grid.clientWidth - 4) / pitch));
  }
  function schedule() { if (!raf) raf = requestAnimationFrame(render); }

  // render draws the seats in view (two rows of margin), reusing the pool.
  function render() {
    raf = 0;
    const n = S.tickets;
    if (!n || grid.offsetParent === null) return;
    measure();
    const rows = Math.ceil(n / cols);
    const left = Math.max(0, Math.floor((grid.clientWidth - cols * pitch) / 2)); // centre the columns
    inner.style.height = rows * pitch + 4 + 'px';
    const r0 = Math.max(0, Math.floor(grid.scrollTop / pitch) - 2);
    const r1 = Math.min(rows, Math.ceil((grid.scrollTop + grid.clientHeight) / pitch) + 2);
    const first = r0 * cols + 1;
    const need = Math.max(0, Math.min(n, r1 * cols) - first + 1);
    while (pool.length < need) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'seat';
      b.setAttribute('role', 'gridcell');
      inner.appendChild(b);
      pool.push(b);
    }
    while (pool.length > need) pool.pop().remove();
    for (let i = 0; i < need; i++) {
      const b = pool[i];
      const id = first + i;
      const idx = id - 1;
      const key = id + ':' + cols + ':' + pitch + ':' + left;
      if (b._key !== key) {
        b._key = key;
        b.dataset.seat = id;
        b.textContent = id;
        b.style.transform = 'translate(' + (left + (idx % cols) * pitch) + 'px,' + (2 + Math.floor(idx / cols) * pitch) + 'px)';
      }
      const st = STATES[S.states[id]] || 'available';
      const mine = S.mine.has(id);
      if (b.dataset.state !== st || b._mine !== mine) {
        b.dataset.state = st;
        b._mine = mine;
        b.classList.toggle('mine', mine);
        b.setAttribute('aria-label', 'Seat ' + id + ', ' + st + (mine ? ', yours' : ''));
      }
      b.tabIndex = id === S.focusSeat ? 0 : -1;
    }
  }
  grid.addEventListener('scroll', schedule, { passive: true });
  window.addEventListener('resize', schedule);
  if (window.ResizeObserver) new ResizeObserver(schedule).observe(grid); // a scroll bar appearing narrows it

  inner.addEventListener('click', (e) => {
    const b = e.target.closest('[data-seat]');
    if (b) { S.focusSeat = Number(b.dataset.seat); choose(S.focusSeat); }
  });

  // Keyboard: one seat is in the tab order; arrows move it (scrolling as
  // needed), Enter or Space picks it.
  grid.addEventListener('keydown', (e) => {
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols, Home: -Infinity, End: Infinity,
      PageUp: -cols * Math.max(1, Math.floor(grid.clientHeight / pitch)), PageDown: cols * Math.max(1, Math.floor(grid.clientHeight / pitch)) };
    if (!(e.key in moves)) return;
    e.preventDefault();
    focusSeat(Math.min(S.tickets, Math.max(1, S.focusSeat + moves[e.key])));
  });
  function focusSeat(id) {
    S.focusSeat = id;
    const row = Math.floor((id - 1) / cols);
    if (row * pitch < grid.scrollTop) grid.scrollTop = row * pitch;
    else if ((row + 1) * pitch > grid.scrollTop + grid.clientHeight) grid.scrollTop = (row + 1) * pitch - grid.clientHeight;
    render();
    const b = inner.querySelector('[data-seat="' + id + '"]');
    if (b) b.focus();
  }

  $('pick').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = Number($('seat-no').value);
    if (id >= 1 && id <= S.tickets) focusSeat(id);
    choose(id);
  });

  // ---- live seat states: one EventSource ----------------------------------
  function decode(b64, n) {
    const bin = atob(b64);
    const st = new Uint8Array(n + 1);
    for (let id = 1; id <= n; id++) st[id] = (bin.charCodeAt((id - 1) >> 2) >> (((id - 1) & 3) * 2)) & 3;
    return st;
  }
  function setCounts(c) {
    S.counts = c;
    $('available').textContent = c.available.toLocaleString();
    $('held').textContent = c.held.toLocaleString();
    $('sold').textContent = c.sold.toLocaleString();
  }
  let source = null;
  function connect() {
    source = new EventSource('/v1/events');
    source.addEventListener('sale', (e) => setFacts(JSON.parse(e.data)));
    // A page that fell behind gets the counters alone until it catches up
    // (then a fresh snapshot).
    source.addEventListener('counts', (e) => setCounts(JSON.parse(e.data)));
    source.addEventListener('snapshot', (e) => {
      const d = JSON.parse(e.data);
      S.tickets = d.tickets;
      S.states = decode(d.seats, d.tickets);
      setCounts(d);
      document.body.dataset.live = 'true';
      update();
      schedule();
    });
    source.addEventListener('seats', (e) => {
      const d = JSON.parse(e.data);
      for (let i = 0; i < d.seats.length; i += 2) S.states[d.seats[i]] = d.seats[i + 1];
      setCounts(d);
      update();
      schedule();
    });
    source.onerror = () => {
      document.body.dataset.live = 'false';
      // A refused stream (a pod shutting down answers 503) is not retried
      // by the browser: reconnect by hand.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000 + Math.random() * 1000);
    };
  }

  // ---- doubt: a request the buyer made is settled, however long it takes ---
  // An intent is one purchase, hold or confirmation the buyer asked for. Its
  // Idempotency-Key (a confirmation: its hold id and payment reference) is
  // fixed at the click, so every retry is the same request and can never buy
  // twice. It is kept in sessionStorage until a definite answer, so a reload
  // carries on with it. A network error or a 5xx (but sale_paused, a definite
  // refusal) is retried after Retry-After (1..5 s); an order id a 503 named is
  // first looked up with GET /v1/orders/{id}: 200 is the answer.
  const DOUBT = {
    purchase: (i) => 'Checking whether your purchase of seat ' + i.seat + ' went through',
    hold: (i) => 'Checking whether your hold of seat ' + i.seat + ' went through',
    confirm: (i) => 'Checking whether your order for seat ' + i.seat + ' went through',
  };
  const transient = (r) => r.code === 'network' || (r.status >= 500 && r.code !== 'sale_paused');
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  async function settle(intent) {
    S.busy = true;
    store('fo.intent', intent);
    for (let attempt = 1; ; attempt++) {
      let r = null;
      if (intent.orderId) {
        const o = await api('GET', '/v1/orders/' + encodeURIComponent(intent.orderId));
        if (o.ok) r = o;
      }
      if (!r) r = await api(intent.method, intent.path, intent.body, intent.kind !== 'confirm', intent.key);
      if (!r.ok && r.data && r.data.orderId && intent.kind !== 'hold') {
        intent.orderId = r.data.orderId;
        store('fo.intent', intent);
      }
      if (r.ok || !transient(r)) {
        store('fo.intent', null);
        S.busy = false;
        notice('');
        finish(intent, r);
        return;
      }
      notice(DOUBT[intent.kind](intent) + ' (attempt ' + attempt + ')…');
      await sleep(Math.min(5, Math.max(1, r.retry || attempt)) * 1000);
    }
  }

  function finish(intent, r) {
    if (intent.kind === 'confirm') {
      if (r.ok) { endHold(); showOrder(r.data); return; }
      if (r.code === 'hold_expired' || r.code === 'hold_not_found') endHold();
      problem(r.code);
      return;
    }
    if (!r.ok) { fail(r.code); return; }
    if (intent.kind === 'hold') startHold(r.data); else showOrder(r.data);
  }

  // ---- choosing a seat: hold or buy -------------------------------------------
  function choose(id) {
    if (S.busy) return;
    clearProblem();
    if (!buyer()) { problem('buyer_missing'); buyerInput.focus(); return; }
    if (S.hold) { problem('hold_active'); return; }
    const kind = S.facts && S.facts.holdTTL > 0 ? 'hold' : 'purchase';
    settle({ kind, method: 'POST', path: '/v1/tickets/' + id + '/' + kind, body: { buyerId: buyer() },
      key: randomHex(16), seat: id, buyer: buyer() });
  }

  function fail(code) {
    if (code === 'pass_invalid' || code === 'pass_required') {
      S.pass = null;
      store('fo.pass', null);
      update();
    }
    problem(code);
  }

  function startHold(h) {
    S.hold = h;
    store('fo.hold', h);
    S.mine.add(h.ticketId);
    S.states[h.ticketId] = 1;
    $('checkout-seat').textContent = h.ticketId;
    $('checkout').hidden = false;
    update();
    $('checkout').querySelector('[data-action="confirm"]').focus();
  }
  function endHold() {
    if (S.hold) S.mine.delete(S.hold.ticketId);
    S.hold = null;
    store('fo.hold', null);
    $('checkout').hidden = true;
    schedule();
  }

  $('checkout').addEventListener('click', async (e) => {
    const action = e.target.closest('[data-action]');
    if (!action || !S.hold || S.busy) return;
    clearProblem();
    const h = S.hold;
    if (action.dataset.action === 'confirm') {
      // A real deployment hands the buyer to a payment provider here and
      // confirms with its reference. The hold id makes retries one order.
      settle({ kind: 'confirm', method: 'POST', path: '/v1/holds/' + h.holdId + '/confirm',
        body: { buyerId: h.buyerId, paymentRef: 'page-' + randomHex(8) }, seat: h.ticketId, buyer: h.buyerId });
    } else {
      S.busy = true;
      const r = await api('DELETE', '/v1/holds/' + h.holdId);
      S.busy = false;
      if (!r.ok && r.code !== 'hold_not_found') { problem(r.code); return; }
      endHold();
      notice('Seat ' + h.ticketId + ' was released.');
    }
  });

  // The buyer's own orders are remembered (localStorage, per buyer id), so
  // a reload still shows their seats as theirs.
  function rememberedOrders() {
    try { return JSON.parse(localStorage.getItem('fo.orders.' + buyer())) || []; } catch (e) { return []; }
  }
  function showOrder(o) {
    const kept = rememberedOrders();
    if (!kept.some((k) => k.orderId === o.orderId)) {
      kept.push({ orderId: o.orderId, ticketId: o.ticketId });
      try { localStorage.setItem('fo.orders.' + buyer(), JSON.stringify(kept)); } catch (e) { /* private mode */ }
    }
    S.mine.add(o.ticketId);
    S.states[o.ticketId] = 2;
    const el = $('order');
    el.dataset.orderId = o.orderId;
    $('order-seat').textContent = o.ticketId;
    $('order-id').textContent = o.orderId;
    el.hidden = false;
    notice('');
    schedule();
  }

  // ---- the waiting room ------------------------------------------------------
  $('join').addEventListener('click', async () => {
    clearProblem();
    if (!buyer()) { problem('buyer_missing'); buyerInput.focus(); return; }
    const r = await joinQueue();
    if (!r.ok) { problem(r.code); return; }
    queueAnswer(r.data, r.retry);
  });

  // Leaving gives the place up (DELETE /v1/queue/{queueId}): the next buyer
  // is let in at once. Gone already is as good as left.
  $('leave').addEventListener('click', async () => {
    clearProblem();
    if (!S.queueId) return;
    const r = await api('DELETE', '/v1/queue/' + encodeURIComponent(S.queueId));
    if (!r.ok && r.code !== 'queue_not_found') { problem(r.code); return; }
    stopQueue();
    notice('You left the queue. You can join again, at the back.');
    update();
  });

  // joinQueue joins, solving the proof of work the room may ask first
  // (pow.js): a fresh challenge comes with each refusal, a few tries.
  async function joinQueue() {
    let extra;
    for (let attempt = 0; ; attempt++) {
      const r = await api('POST', '/v1/queue', { buyerId: buyer() }, false, null, extra);
      if (r.ok || !r.challenge || attempt === 3) return r;
      $('queue-info').textContent = 'Your browser is solving the waiting room\'s puzzle…';
      const s = await window.FluxPow.solve(r.challenge, r.difficulty);
      const root = document.documentElement.dataset; // read by the browser tests
      root.powMs = String(Math.round(s.ms)); root.powHashes = String(s.hashes); root.powEngine = s.engine;
      extra = { 'Flux-Order-Proof': s.proof };
    }
  }

  function queueAnswer(q, retry) {
    if (q.queueId) {
      S.queueId = q.queueId;
      store('fo.queue', { buyer: buyer(), id: q.queueId });
    }
    $('queue-status').hidden = false;
    $('queue-position').textContent = q.position != null ? Number(q.position).toLocaleString() : '–';
    $('queue-wait').textContent = q.estimatedWaitSeconds != null ? duration(q.estimatedWaitSeconds * 1000) : '–';
    if (q.state === 'admitted' && q.pass) {
      admitted(q.pass);
      return;
    }
    if (q.state === 'sold_out' || q.state === 'closed') {
      stopQueue();
      problem(q.state === 'sold_out' ? 'sold_out' : 'queue_closed');
      return;
    }
    update();
    clearTimeout(S.queueTimer);
    S.queueTimer = setTimeout(pollQueue, Math.max(0.5, retry || 1) * 1000);
  }

  async function pollQueue() {
    if (!S.queueId) return;
    const r = await api('GET', '/v1/queue/' + encodeURIComponent(S.queueId));
    if (!r.ok) {
      if (r.code === 'queue_not_found') { stopQueue(); problem(r.code); return; }
      S.queueTimer = setTimeout(pollQueue, Math.max(1, r.retry || 2) * 1000); // keep our place: just ask again
      return;
    }
    queueAnswer(r.data, r.retry);
  }

  // admitted hands the buyer over to the seat map: the pass goes with every
  // hold and purchase from now on.
  function admitted(pass) {
    S.pass = pass;
    store('fo.pass', { buyer: buyer(), pass });
    stopQueue();
    notice("It's your turn: pick a seat.");
    update();
  }

  function stopQueue() {
    clearTimeout(S.queueTimer);
    S.queueId = null;
    store('fo.queue', null);
    $('queue-status').hidden = true;
  }

  // restoreOrders shows the current buyer's remembered orders: their seats
  // as theirs, the last one in the order panel.
  function restoreOrders() {
    S.mine = new Set(S.hold ? [S.hold.ticketId] : []);
    $('order').hidden = true;
    const kept = rememberedOrders();
    for (const o of kept) S.mine.add(o.ticketId);
    if (kept.length) showOrder(kept[kept.length - 1]);
    schedule();
  }

  // restoreQueue picks up this tab's pass or place after a reload, for the
  // current buyer id only.
  function restoreQueue() {
    const p = load('fo.pass');
    S.pass = p && p.buyer === buyer() ? p.pass : null;
    const q = load('fo.queue');
    clearTimeout(S.queueTimer);
    S.queueId = null;
    if (!S.pass && q && q.buyer === buyer()) { S.queueId = q.id; pollQueue(); }
    update();
  }

  // ---- start -------------------------------------------------------------
  async function start() {
    const t0 = Date.now();
    const r = await api('GET', '/v1/sale');
    if (!r.ok) { problem(r.code); setTimeout(start, 2000); return; }
    S.offset = Date.parse(r.data.serverTime) - (t0 + Date.now()) / 2;
    setFacts(r.data);
    const h = load('fo.hold');
    if (h && Date.parse(h.expiresAt) > now()) startHold(h);
    restoreQueue();
    restoreOrders();
    connect();
    setInterval(update, 1000);
    // A request in doubt when the page was left goes on, for its buyer.
    const intent = load('fo.intent');
    if (intent && intent.buyer === buyer()) settle(intent); else store('fo.intent', null);
  }
  start();
})();
