// petrel.js: a browser client for Petrel push servers. One ES module, no dependencies.
//
//   import { PetrelClient } from '/petrel.js';
//   const client = new PetrelClient('/stream', { sseUrl: '/events' });
//   client.on('message', ({ value, id }) => { show(value); client.ack(id); });
//   client.connect();
//
// A WebSocket first; Server-Sent Events (downstream) and fetch POSTs (upstream) when a WebSocket
// cannot get through, with a WebSocket tried again now and then. After any reconnect the stream
// resumes after the last event id; replayed duplicates are dropped and skipped ids reported.
// A connection silent for too long counts as dead (pings and SSE comments never reach scripts:
// a quiet server sends an empty message now and then). STOMP 1.2 over the WebSocket with `stomp`.
//
// Events (addEventListener, where `event.detail` holds the fields, or on(name, fn)):
//   state    {state: connecting|open|fallback|reconnecting|closed, transport, ...}
//   message  {data, value, id, transport, first}
//   gap      {expected, got, after, first, transport}
//   latency  {ms, id, transport}
//   drain    {bufferedAmount}
//   error    {error, transport}

// Petrel's event ids with the Redis engine are epoch * 2^40 + sequence (epoch 0 in-process).
const EPOCH = 2 ** 40;
const SUB = 'sub-0'; // the one STOMP subscription (and its receipt)

// Whether `id` comes right after `last`. After 0 (a snapshot taken before anything was
// published) the next is the first of its epoch.
const follows = (last, id) => (last === 0 ? id % EPOCH === 1 : id === last + 1);

const DEFAULTS = {
  transport: 'auto',          // 'auto' (WebSocket, SSE when it fails), 'websocket' or 'sse' only
  sseUrl: null,               // the EventSource URL (null: the WebSocket URL's path over http)
  postUrl: null,              // where send() POSTs while on SSE (null: send() returns false there)
  ackUrl: null,               // where ack() POSTs while on SSE (null: postUrl)
  clientId: null,             // sent as ?client= (null: a random one)
  openTimeout: 10000,         // ms for a connection to open
  firstMessageTimeout: 5000,  // ms after a WebSocket opens: no message means a buffering proxy
  fallbackAfter: 2,           // WebSockets failed in a row, none ever delivering, before SSE
  wsRetryInterval: 60000,     // ms between WebSocket tries while on SSE (0: never)
  backoffStart: 250,          // ms, the first reconnect waits up to this ...
  backoffMax: 10000,          // ... doubling to this
  silenceTimeout: 20000,      // ms without any message before the connection counts as dead
  highWaterMark: 1 << 20,     // bytes buffered above which send() refuses
  ackInterval: 250,           // ms, at most one acknowledgement per interval
  // The wire form of an acknowledgement: the text sent on the WebSocket, or the POST body on SSE.
  ackEncode: (id, transport) => (transport === 'sse' ? String(id) : JSON.stringify({ ack: id })),
  decode: (data) => (typeof data === 'string' && /^\s*[[{]/.test(data) ? tryJSON(data) : data),
  idOf: (value) => (value && typeof value.id === 'number' ? value.id : null),
  timeOf: () => null,         // a message's publish time (ms since the epoch), for latency
  isSnapshot: () => false,    // a message that restarts the sequence at its id
  isHeartbeat: (value) => value === '', // only says the connection lives: an empty message
  beforeConnect: null,        // async (client) => {}, awaited before each connection attempt
  stomp: null,                // {destination, ack: 'auto'|'client', heartBeat: 10000, headers, sendTo}
};

function tryJSON(text) { try { return JSON.parse(text); } catch { return text; } }

// A URL relative to the page, with the scheme a transport needs.
function withScheme(url, secure, plain) {
  const u = new URL(url, location.href);
  if (u.protocol === 'https:' || u.protocol === 'wss:') u.protocol = secure;
  else if (u.protocol === 'http:' || u.protocol === 'ws:') u.protocol = plain;
  return u;
}

function trySend(ws, text) {
  if (ws.readyState !== 1) return false;
  try { ws.send(text); return true; } catch { return false; }
}

export class PetrelClient extends EventTarget {
  #o;
  #url;               // the WebSocket URL
  #sseUrl;
  #clientId;
  #running = false;
  #gen = 0;           // bumped by each attempt and by close(): a late beforeConnect is ignored
  #conn = null;       // the current connection (see #connection)
  #probe = null;      // a WebSocket tried while on SSE; it takes over once it delivers
  #transport;
  #state = 'closed';
  #lastId = null;
  #attempt = 0;
  #retryTimer = 0;
  #probeTimer = 0;
  #wsProven = false;  // a WebSocket has delivered a message here: no reason to fall back
  #wsFailures = 0;
  #ack = { pending: null, sent: null, at: 0, timer: 0 };
  #posting = 0;       // bytes of POSTs in flight: SSE's bufferedAmount
  #drainTimer = 0;
  #online = () => {   // the network is back: do not sit out the backoff
    if (!this.#retryTimer) return;
    clearTimeout(this.#retryTimer);
    this.#attempt = 0;
    this.#open();
  };
  /** Counters since construction. */
  stats = { messages: 0, duplicates: 0, gaps: 0, reconnects: 0 };

  /** `url`: the WebSocket (or STOMP) endpoint, absolute or relative to the page. */
  constructor(url, options = {}) {
    super();
    const o = this.#o = { ...DEFAULTS, ...options };
    if (o.stomp && !o.stomp.destination) throw new TypeError('stomp needs a destination');
    this.#url = withScheme(url, 'wss:', 'ws:');
    this.#sseUrl = withScheme(o.sseUrl ?? url, 'https:', 'http:');
    this.#clientId = o.clientId ?? randomId();
    this.#transport = o.stomp ? 'stomp' : (o.transport === 'sse' || !globalThis.WebSocket ? 'sse' : 'websocket');
  }

  get clientId() { return this.#clientId; }
  /** 'websocket', 'sse' or 'stomp': the current (or next) connection's transport. */
  get transport() { return this.#transport; }
  get state() { return this.#state; }
  /** The last event id delivered (null: none). Setting it changes where the next connection resumes. */
  get lastId() { return this.#lastId; }
  set lastId(id) { this.#setLast(id == null ? null : Number(id)); }
  /** The live WebSocket and EventSource, for debugging (null when not in use). */
  get ws() { return this.#conn?.ws ?? null; }
  get es() { return this.#conn?.es ?? null; }
  /** Bytes sent and not yet out: the WebSocket's bufferedAmount, or POSTs in flight on SSE. */
  get bufferedAmount() {
    const c = this.#conn;
    return !c ? 0 : c.es ? this.#posting : (c.ws?.bufferedAmount ?? 0);
  }

  /** on('message', (detail, event) => ...): returns a function that removes the listener. */
  on(name, fn) {
    const listener = (event) => fn(event.detail, event);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  /** Starts (or, after close(), resumes from lastId). */
  connect() {
    if (this.#running) return this;
    this.#running = true;
    this.#attempt = 0;
    globalThis.addEventListener?.('online', this.#online);
    this.#open();
    return this;
  }

  /** Stops everything: connections, timers, listeners. connect() starts again. */
  close() {
    if (!this.#running) return;
    this.#running = false;
    this.#gen++;
    for (const t of [this.#retryTimer, this.#probeTimer, this.#ack.timer, this.#drainTimer]) clearTimeout(t);
    this.#retryTimer = this.#probeTimer = this.#ack.timer = this.#drainTimer = 0;
    for (const c of [this.#conn, this.#probe]) if (c) this.#teardown(c);
    this.#conn = this.#probe = null;
    globalThis.removeEventListener?.('online', this.#online);
    this.#setState('closed');
  }

  /** Drops the current connection and connects again (after the backoff), resuming from lastId. */
  reconnect() {
    if (!this.#running) return;
    if (this.#conn) this.#lost(this.#conn, 'reconnect requested');
    else if (!this.#retryTimer) { this.#gen++; this.#retry('reconnect requested'); }
  }

  /** Sends upstream (a WebSocket message, a STOMP SEND, a POST on SSE). False, and nothing
   *  queued, when not connected or over highWaterMark: a `drain` event follows under it. */
  send(data) {
    const c = this.#conn;
    if (!c || !c.announced) return false;
    const high = this.#o.highWaterMark;
    if (this.bufferedAmount >= high) { this.#watchDrain(); return false; }
    let ok;
    if (c.es) {
      ok = this.#post(this.#o.postUrl, data);
    } else if (c.kind === 'stomp') {
      const body = String(data);
      ok = trySend(c.ws, frame('SEND', [['destination', this.#o.stomp.sendTo ?? this.#o.stomp.destination],
        ['content-type', 'text/plain'], ['content-length', String(utf8.encode(body).length)]], true, body));
    } else {
      ok = trySend(c.ws, data);
    }
    if (ok && this.bufferedAmount >= high) this.#watchDrain();
    return ok;
  }

  /** Acknowledges everything up to `id`: at most one acknowledgement per ackInterval, with the
   *  highest id; one not sent for want of a connection goes out on the next. */
  ack(id) {
    const a = this.#ack;
    if (id == null || (a.pending != null && id <= a.pending)) return;
    a.pending = id;
    this.#scheduleAck();
  }

  // ------------------------------------------------------------------ connections

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  #setState(state, extra = {}) {
    this.#state = state;
    this.#emit('state', { state, transport: this.#transport, ...extra });
  }

  async #open() {
    const gen = ++this.#gen;
    this.#retryTimer = 0;
    this.#setState('connecting');
    if (this.#o.beforeConnect) {
      try {
        await this.#o.beforeConnect(this);
      } catch (error) {
        if (gen !== this.#gen) return;
        this.#emit('error', { error, transport: this.#transport });
        this.#retry('beforeConnect failed');
        return;
      }
      if (gen !== this.#gen || !this.#running) return; // closed (or reconnected) meanwhile
    }
    if (this.#transport === 'sse') this.#openSSE(); else this.#openWS(false);
  }

  // Full jitter: a crowd of clients cut off at once comes back spread over the whole window.
  #retry(reason) {
    if (!this.#running) return;
    clearTimeout(this.#retryTimer);
    const cap = Math.min(this.#o.backoffMax, this.#o.backoffStart * 2 ** this.#attempt);
    const delay = Math.round(Math.random() * cap);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.stats.reconnects++;
    this.#setState('reconnecting', { reason, delay });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  // One connection's state; its watchdog checks the open timeout, the first message and silence.
  #connection(kind, probe) {
    const o = this.#o, now = Date.now();
    const c = {
      kind, probe, ws: null, es: null, parser: null,
      after: this.#lastId,   // where it resumes (STOMP: set again at SUBSCRIBE)
      started: now, since: now, lastReceived: now, limit: o.silenceTimeout,
      opened: false, announced: false, heard: false, received: false, dead: false,
      lastEventId: '', acks: [], watch: 0, beat: 0,
    };
    // Checked four times a second (or a quarter of the shortest limit): a limit is kept to
    // within that much, not a whole second late.
    const every = Math.max(50, Math.min(250, o.firstMessageTimeout / 4, o.silenceTimeout / 4));
    c.watch = setInterval(() => this.#check(c), every);
    if (probe) this.#probe = c; else this.#conn = c;
    return c;
  }

  #check(c) {
    const o = this.#o, now = Date.now();
    if (!c.opened) {
      if (now - c.started > o.openTimeout) this.#lost(c, 'open timeout');
    } else if (!c.heard && c.kind === 'websocket' && (c.probe || !this.#wsProven) && now - c.since > o.firstMessageTimeout) {
      // Open but mute: a proxy that buffers the response. SSE may get through it.
      this.#lost(c, 'no message after open', true);
    } else if (now - c.lastReceived > c.limit) {
      // A dead peer or path often closes nothing: silence is the only sign.
      this.#lost(c, 'silence');
    }
  }

  // A WebSocket: the stream (with resume query), a STOMP session, or a probe while on SSE.
  #openWS(probe) {
    const stomp = this.#o.stomp;
    const c = this.#connection(stomp ? 'stomp' : 'websocket', probe);
    try {
      c.ws = stomp ? new WebSocket(this.#query(this.#url, false), 'v12.stomp') : new WebSocket(this.#query(this.#url, true));
    } catch (error) {
      this.#emit('error', { error, transport: c.kind });
      return this.#lost(c, 'cannot connect');
    }
    const ws = c.ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (c.dead) return;
      c.since = c.lastReceived = Date.now();
      if (stomp) {
        c.parser = stompParser();
        const beat = stomp.heartBeat ?? 10000;
        trySend(ws, frame('CONNECT', [['accept-version', '1.2'], ['host', location.hostname], ['heart-beat', `${beat},${beat}`]], false));
        return; // open once CONNECTED
      }
      c.opened = true;
      if (!probe) this.#announce(c);
    };
    ws.onmessage = (ev) => {
      if (c.dead) return;
      c.lastReceived = Date.now();
      if (!c.heard) { // the path carries messages (no buffering proxy): stay on WebSockets
        c.heard = this.#wsProven = true;
        this.#wsFailures = 0;
        if (c.probe) this.#promote(c);
      }
      if (stomp) this.#stompData(c, ev.data); else this.#receive(c, ev.data, null);
    };
    ws.onerror = () => {}; // a close event follows; handled there
    ws.onclose = (ev) => this.#lost(c, `closed (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`);
  }

  // Server-Sent Events, reconnected by hand rather than by the browser: with our backoff, and
  // with last_event_id in the query (Petrel reads it there as well as from Last-Event-ID).
  #openSSE() {
    const c = this.#connection('sse', false);
    try { c.es = new EventSource(this.#query(this.#sseUrl, true)); } catch (error) {
      this.#emit('error', { error, transport: 'sse' });
      return this.#lost(c, 'cannot connect');
    }
    c.es.onopen = () => {
      if (c.dead) return;
      c.opened = true;
      c.since = c.lastReceived = Date.now();
      this.#announce(c);
    };
    c.es.onmessage = (ev) => {
      if (c.dead) return;
      c.lastReceived = Date.now();
      // lastEventId stays from the previous event when this one has no id: only a change counts.
      const fresh = ev.lastEventId !== c.lastEventId ? ev.lastEventId : null;
      c.lastEventId = ev.lastEventId;
      this.#receive(c, ev.data, fresh);
    };
    c.es.onerror = () => this.#lost(c, 'stream error');
    this.#scheduleProbe();
  }

  #scheduleProbe() {
    const o = this.#o;
    if (!this.#running || this.#transport !== 'sse' || o.transport !== 'auto' || !o.wsRetryInterval
        || !globalThis.WebSocket || this.#probe || this.#probeTimer) return;
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = 0;
      if (this.#running && this.#transport === 'sse') this.#openWS(true);
    }, o.wsRetryInterval);
  }

  // The probe delivered: it becomes the connection and the SSE stream goes.
  #promote(c) {
    const old = this.#conn;
    this.#probe = null;
    c.probe = false;
    this.#conn = c;
    this.#transport = 'websocket';
    clearTimeout(this.#retryTimer);
    this.#retryTimer = 0;
    this.#gen++; // an SSE attempt waiting in beforeConnect stops there
    if (old) this.#teardown(old);
    this.#announce(c);
  }

  #announce(c) {
    if (c.announced) return;
    c.announced = true;
    this.#transport = c.kind;
    this.#setState('open', { resumeFrom: c.after, since: c.since });
    const a = this.#ack;
    if (a.pending != null && a.pending !== a.sent) this.#scheduleAck();
  }

  #teardown(c) {
    c.dead = true;
    clearInterval(c.watch);
    clearInterval(c.beat);
    if (c.ws) {
      c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
      try { c.ws.close(1000); } catch { /* closing already */ }
    }
    if (c.es) c.es.close();
  }

  // Connection c is over: reconnect (after the backoff), or fall back to SSE.
  #lost(c, reason, mute = false) {
    if (c.dead) return;
    this.#teardown(c);
    if (c.probe) {
      if (this.#probe === c) this.#probe = null;
      this.#scheduleProbe();
      return;
    }
    if (this.#conn !== c) return;
    this.#conn = null;
    if (!this.#running) return;
    if (c.kind === 'websocket' && !c.heard) this.#wsFailures++;
    if (c.kind === 'websocket' && this.#o.transport === 'auto' && !this.#wsProven
        && (mute || this.#wsFailures >= this.#o.fallbackAfter)) {
      this.#transport = 'sse';
      this.#attempt = 0;
      this.#setState('fallback', { reason });
      this.#open();
      return;
    }
    this.#retry(reason);
  }

  // ------------------------------------------------------------------ messages

  // One message of connection c: dropped when a replay repeats it, a gap reported when ids skip.
  #receive(c, data, transportId, ackHeader) {
    const o = this.#o;
    const value = o.decode(data);
    // Comments are invisible to EventSource, and pings to WebSocket scripts: an empty message
    // is how a server keeps a quiet stream from looking dead (lastReceived is set already).
    if (o.isHeartbeat(value)) return;
    const first = !c.received;
    if (first) {
      c.received = true;
      this.#attempt = 0; // reset here, not on open: a server that accepts and closes is not hammered
      this.#announce(c);
    }
    // The transport's id (SSE id, STOMP message-id) if it has one, else the payload's.
    let id = transportId ? Number(transportId) : NaN;
    if (!Number.isFinite(id)) id = o.idOf(value) ?? null;
    if (id != null) {
      const last = this.#lastId;
      if (o.isSnapshot(value)) {
        // Where the stream goes on from, whatever came before (a restarted server starts low).
      } else if (first && c.after != null && !follows(c.after, id)) {
        // The server could not resume after c.after: its history no longer reaches back, or
        // it restarted. The listener may reconnect (after fetching a snapshot, say).
        if (this.#gap(c, c.after, id, true)) return;
      } else if (last != null && id <= last) {
        this.stats.duplicates++;
        return;
      } else if (last != null && !follows(last, id)) {
        if (this.#gap(c, last, id, false)) return;
      }
      this.#setLast(id);
      // STOMP client mode: ack headers to use; bounded for an application that never acks.
      if (ackHeader != null && c.acks.push([id, ackHeader]) > 1024) c.acks.splice(0, 512);
    }
    this.stats.messages++;
    this.#emit('message', { data, value, id, transport: c.kind, first });
    // After the listeners ran: from publish to what they put on screen.
    const t = o.timeOf(value);
    if (typeof t === 'number' && Number.isFinite(t)) this.#emit('latency', { ms: Date.now() - t, id, transport: c.kind });
  }

  // Reports a gap; true when a listener replaced the connection (the message is not delivered).
  #gap(c, after, got, first) {
    this.stats.gaps++;
    this.#emit('gap', { expected: after === 0 ? 1 : after + 1, got, after, first, transport: c.kind });
    return c.dead || this.#conn !== c;
  }

  #setLast(id) {
    // Going back (a new sequence): what was acknowledged belongs to the old one.
    if (id == null || (this.#lastId != null && id < this.#lastId)) {
      clearTimeout(this.#ack.timer);
      this.#ack = { pending: null, sent: null, at: 0, timer: 0 };
    }
    this.#lastId = id;
  }

  #query(base, resume) {
    const u = new URL(base);
    u.searchParams.set('client', this.#clientId);
    if (resume && this.#lastId != null) u.searchParams.set('last_event_id', String(this.#lastId));
    return u.href;
  }

  // ------------------------------------------------------------------ upstream

  #post(url, body) {
    if (!url) return false;
    const size = typeof body === 'string' ? utf8.encode(body).length : (body?.byteLength ?? body?.size ?? 0);
    this.#posting += size;
    fetch(this.#query(withScheme(url, 'https:', 'http:'), false), {
      method: 'POST', body, headers: typeof body === 'string' ? { 'Content-Type': 'text/plain' } : undefined,
    }).then((r) => {
      r.body?.cancel(); // nothing to read: let the browser finish the request
      if (!r.ok) throw new Error(`POST ${url}: ${r.status}`);
    }).catch((error) => {
      if (this.#running) this.#emit('error', { error, transport: 'sse' });
    }).finally(() => { this.#posting -= size; });
    return true;
  }

  // Polls bufferedAmount while above the mark (the WebSocket API has no event for it).
  #watchDrain() {
    if (this.#drainTimer) return;
    this.#drainTimer = setInterval(() => {
      const c = this.#conn;
      if (!c || !c.announced || this.bufferedAmount >= this.#o.highWaterMark) return;
      clearInterval(this.#drainTimer);
      this.#drainTimer = 0;
      this.#emit('drain', { bufferedAmount: this.bufferedAmount });
    }, 50);
  }

  #scheduleAck() {
    const a = this.#ack;
    if (a.timer || !this.#running) return;
    a.timer = setTimeout(() => this.#flushAck(), Math.max(0, a.at + this.#o.ackInterval - Date.now()));
  }

  #flushAck() {
    const a = this.#ack, o = this.#o, c = this.#conn, id = a.pending;
    a.timer = 0;
    if (id == null || id === a.sent || !c || !c.announced) return; // sent on the next open
    let ok = false;
    if (c.kind === 'stomp') {
      if (o.stomp.ack !== 'client') { a.sent = id; return; }
      // Cumulative: the ack header of the last message up to id that this connection delivered
      // (a new connection acknowledges only its own messages).
      let header = null;
      while (c.acks.length && c.acks[0][0] <= id) header = c.acks.shift()[1];
      if (header === null) return;
      ok = trySend(c.ws, frame('ACK', [['id', header]], true));
    } else if (c.es) {
      ok = this.#post(o.ackUrl ?? o.postUrl, o.ackEncode(id, 'sse'));
    } else {
      ok = trySend(c.ws, o.ackEncode(id, 'websocket'));
    }
    if (ok) { a.sent = id; a.at = Date.now(); }
  }

  // ------------------------------------------------------------------ STOMP

  #stompData(c, data) {
    let frames;
    try { frames = c.parser.push(data); } catch (error) {
      this.#emit('error', { error, transport: 'stomp' });
      return this.#lost(c, 'bad STOMP frame');
    }
    for (const f of frames) if (!c.dead) this.#stompFrame(c, f);
  }

  #stompFrame(c, f) {
    const s = this.#o.stomp, h = f.headers;
    switch (f.command) {
      case 'CONNECTED': {
        c.opened = true;
        c.since = Date.now();
        c.after = this.#lastId;
        // heart-beat:sx,sy: we beat every max(ours, sy) ms and take the server as gone after
        // two of its periods (max(ours, sx)) without a byte, or silenceTimeout when longer.
        const [sx, sy] = String(h['heart-beat'] ?? '0,0').split(',').map((n) => parseInt(n, 10) || 0);
        const mine = s.heartBeat ?? 10000;
        if (mine > 0 && sy > 0) c.beat = setInterval(() => trySend(c.ws, '\n'), Math.max(mine, sy));
        if (mine > 0 && sx > 0) c.limit = Math.max(this.#o.silenceTimeout, 2 * Math.max(mine, sx));
        const headers = [['id', SUB], ['destination', s.destination], ['ack', s.ack ?? 'auto']];
        if (c.after != null) headers.push(['last-event-id', String(c.after)]);
        for (const [k, v] of Object.entries(s.headers ?? {})) headers.push([k, String(v)]);
        headers.push(['receipt', SUB]); // the RECEIPT says the subscription is in place
        trySend(c.ws, frame('SUBSCRIBE', headers, true));
        break;
      }
      case 'RECEIPT':
        if (h['receipt-id'] === SUB) this.#announce(c);
        break;
      case 'MESSAGE':
        if (h.subscription === SUB) this.#receive(c, f.body, h['message-id'], h.ack);
        break;
      case 'ERROR':
        this.#emit('error', { error: new Error(`STOMP ERROR: ${h.message ?? ''}`), body: f.body, transport: 'stomp' });
        this.#lost(c, 'STOMP ERROR');
        break;
    }
  }
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
}

// ------------------------------------------------------------------ STOMP frames

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const MAX_FRAME = 1 << 20; // bytes of an unfinished frame

// STOMP 1.2 header escaping (not in CONNECT and CONNECTED).
const stompEscape = (s) => String(s).replace(/[\\\r\n:]/g, (ch) => ({ '\\': '\\\\', '\r': '\\r', '\n': '\\n', ':': '\\c' })[ch]);
const stompUnescape = (s) => (s.includes('\\') ? s.replace(/\\([\\rnc])/g, (m, ch) => ({ n: '\n', r: '\r', c: ':', '\\': '\\' })[ch]) : s);

function frame(command, headers, escaped, body = '') {
  let out = command + '\n';
  for (const [k, v] of headers) out += (escaped ? stompEscape(k) + ':' + stompEscape(v) : k + ':' + v) + '\n';
  return out + '\n' + body + '\0';
}

// An incremental parser over bytes (content-length counts UTF-8 bytes): push() takes one
// WebSocket message and returns the frames it completed, so a message may hold several frames
// and a frame may span several messages. EOLs between frames (heart-beats) are skipped.
// Throws on a malformed frame.
function stompParser() {
  let buf = new Uint8Array(0);

  const line = (from, end) => fromUtf8.decode(buf.subarray(from, end > from && buf[end - 1] === 13 ? end - 1 : end));

  // The frame at `start`, or null when its end has not arrived yet.
  function frameAt(start) {
    let nl = buf.indexOf(10, start);
    if (nl < 0) return null;
    const command = line(start, nl);
    if (!/^[A-Z]+$/.test(command)) throw new Error(`bad STOMP command ${JSON.stringify(command)}`);
    const headers = Object.create(null);
    let pos = nl + 1;
    for (;;) {
      nl = buf.indexOf(10, pos);
      if (nl < 0) return null;
      const text = line(pos, nl);
      pos = nl + 1;
      if (text === '') break;
      const colon = text.indexOf(':');
      if (colon < 0) throw new Error(`bad STOMP header ${JSON.stringify(text)}`);
      let name = text.slice(0, colon), value = text.slice(colon + 1);
      if (command !== 'CONNECTED') { name = stompUnescape(name); value = stompUnescape(value); }
      if (!(name in headers)) headers[name] = value; // the first of a repeated header counts
    }
    let end;
    const length = headers['content-length'];
    if (length !== undefined && /^\d+$/.test(length)) {
      end = pos + parseInt(length, 10);
      if (end >= buf.length) return null;
      if (buf[end] !== 0) throw new Error('STOMP body longer than its content-length');
    } else {
      end = buf.indexOf(0, pos);
      if (end < 0) return null;
    }
    return { frame: { command, headers, body: fromUtf8.decode(buf.subarray(pos, end)) }, next: end + 1 };
  }

  return {
    push(data) {
      const bytes = typeof data === 'string' ? utf8.encode(data) : new Uint8Array(data);
      if (buf.length) {
        const joined = new Uint8Array(buf.length + bytes.length);
        joined.set(buf);
        joined.set(bytes, buf.length);
        buf = joined;
      } else buf = bytes;
      const frames = [];
      let pos = 0;
      while (pos < buf.length) {
        if (buf[pos] === 10) { pos++; continue; } // heart-beat (LF)
        if (buf[pos] === 13) {                     // heart-beat (CR LF)
          if (pos + 1 >= buf.length) break;
          if (buf[pos + 1] === 10) { pos += 2; continue; }
        }
        const got = frameAt(pos);
        if (!got) break;
        frames.push(got.frame);
        pos = got.next;
      }
      buf = pos === buf.length ? new Uint8Array(0) : buf.slice(pos);
      if (buf.length > MAX_FRAME) throw new Error(`STOMP frame over ${MAX_FRAME} bytes`);
      return frames;
    },
  };
}
