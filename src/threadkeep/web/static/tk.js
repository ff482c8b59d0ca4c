/* threadkeep browser client, shared by the chat page, the dashboard and /widget.js.
 *
 * Plain ES2017, no dependencies: TK.api (fetch wrapper), TK.Live (EventSource on /v1/events
 * with a live / reconnecting / offline state), TK.ChatSession (one visitor conversation kept in
 * the browser, synced over SSE, with an outbox that survives going offline), TK.storage (the one
 * guarded localStorage helper) and small DOM helpers.
 */
"use strict";

const TK = (() => {
  /* Every kind of /v1/events event (the service's EventKind; a test keeps the two equal). */
  const EVENT_KINDS = [
    "conversation.started", "message.appended", "status.changed", "stage.changed",
    "state.saved", "conversation.closed", "conversation.deleted",
    "message.popped", "messages.cleared", "messages.replaced", "agent.assigned",
    "retention.changed", "message.delivery",
  ];

  /* localStorage, guarded: storage may be disabled (a widget in a strict iframe, private
   * modes); then values last for this page only. Values are JSON. */
  const memory = new Map();
  const storage = {
    get(key, fallback = null) {
      let text = null;
      try { text = localStorage.getItem(key); } catch (err) { text = memory.has(key) ? memory.get(key) : null; }
      if (text === null) return fallback;
      try { return JSON.parse(text); } catch (err) { return fallback; }
    },
    set(key, value) {
      const text = JSON.stringify(value);
      memory.set(key, text);
      try { localStorage.setItem(key, text); } catch (err) { /* this page only */ }
    },
    remove(key) {
      memory.delete(key);
      try { localStorage.removeItem(key); } catch (err) { /* this page only */ }
    },
  };

  const joinUrl = (base, path) => (base || "").replace(/\/+$/, "") + path;

  /* The API key (a service with THREADKEEP_API_KEYS maps it to a tenant). A page takes it once
   * from its address (/dashboard#key=…) and keeps it; the widget needs none (a public chat gives
   * each visitor a token of its own). */
  const KEY_STORE = "threadkeep.api_key";
  let apiKey = null;

  function setApiKey(key, persist) {
    apiKey = key || null;
    if (!persist) return;
    if (apiKey) storage.set(KEY_STORE, apiKey); else storage.remove(KEY_STORE);
  }

  /* Read key=… from the page's #fragment (then drop it from the address bar), else the key
   * saved by an earlier visit. Returns the fragment's other parameters. */
  function keyFromPage() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const key = params.get("key");
    if (key) {
      setApiKey(key, true);
      params.delete("key");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    } else {
      apiKey = storage.get(KEY_STORE);
    }
    return params;
  }

  /* One HTTP call. Never throws: network failures come back with status 0. `token` (a visitor
   * token) replaces the API key. */
  async function api(base, method, path, body, headers, token) {
    const init = { method, headers: Object.assign({ Accept: "application/json" }, headers || {}) };
    const bearer = token || apiKey;
    if (bearer) init.headers.Authorization = "Bearer " + bearer;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(joinUrl(base, path), init);
    } catch (err) {
      return { ok: false, status: 0, data: null, etag: null, error: "The server cannot be reached." };
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (err) { data = text; }
    }
    const out = { ok: res.ok, status: res.status, data, etag: res.headers.get("ETag"), error: null };
    if (!res.ok) out.error = errorText(res.status, data);
    return out;
  }

  /* The service answers every error as {"error": {"type", "message", "field"?, "rule"?}}. */
  function errorText(status, data) {
    if (status === 401) {
      return "This service needs an API key: open this page as " + location.pathname +
        "#key=YOUR_KEY (it is then remembered in this browser).";
    }
    if (data && data.error && data.error.message) return data.error.message;
    if (typeof data === "string" && data) return data.slice(0, 200);
    return "HTTP " + status;
  }

  /* Follows /v1/events. onEvent(event) gets {id, kind, conversation_id, data}; onState(state)
   * gets "live", "reconnecting" or "offline"; onResync() is called after every reconnection,
   * since events may have been missed while the stream was down. token() returns the visitor
   * token to follow with (EventSource cannot send headers: it goes in the URL). */
  class Live {
    constructor(base, onEvent, onState, onResync, token) {
      this.base = base;
      this.onEvent = onEvent;
      this.onState = onState || (() => {});
      this.onResync = onResync || (() => {});
      this.token = token || (() => null);
      this.source = null;
      this.failures = 0;
      this.opened = false;
      this.timer = null;
      this.seen = new Set();
      this.state = null;
      window.addEventListener("offline", () => this.setState("offline"));
      window.addEventListener("online", () => this.restart());
    }

    setState(state) {
      if (state === this.state) return;
      this.state = state;
      this.onState(state);
    }

    url() {
      const visitor = this.token();
      const query = visitor ? "?visitor_token=" + encodeURIComponent(visitor)
        : apiKey ? "?api_key=" + encodeURIComponent(apiKey) : "";
      return joinUrl(this.base, "/v1/events") + query;
    }

    start() {
      if (this.source) this.source.close();
      this.setState(this.opened ? "reconnecting" : (this.state || "reconnecting"));
      const source = new EventSource(this.url());
      this.source = source;
      source.onopen = () => {
        const again = this.opened;
        this.opened = true;
        this.failures = 0;
        this.setState("live");
        if (again) this.onResync();
      };
      source.onerror = () => {
        if (source !== this.source) return;
        this.failures += 1;
        this.setState(!navigator.onLine || this.failures >= 3 ? "offline" : "reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          // The server refused the stream (a 410 for an expired cursor, a 5xx …): start afresh.
          const delay = Math.min(10000, 500 * Math.pow(2, Math.min(this.failures, 5)));
          clearTimeout(this.timer);
          this.timer = setTimeout(() => { this.opened = true; this.start(); }, delay);
        }
      };
      const handler = (msg) => this.dispatch(msg);
      EVENT_KINDS.forEach((kind) => source.addEventListener(kind, handler));
    }

    restart() {
      clearTimeout(this.timer);
      this.failures = 0;
      this.start();
    }

    dispatch(msg) {
      if (msg.lastEventId) {
        if (this.seen.has(msg.lastEventId)) return;
        if (this.seen.size > 5000) this.seen.clear();
        this.seen.add(msg.lastEventId);
      }
      let event;
      try { event = JSON.parse(msg.data); } catch (err) { return; }
      this.onEvent({ id: event.id, kind: event.kind, conversation_id: event.conversation_id, data: event.data });
    }
  }

  /* A function that runs fn once `ms` after its last call. */
  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    });
    (children || []).forEach((child) => {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function timeText(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  const ROLE_LABEL = { user: "You", assistant: "Bot", agent: "Agent", system: "System", tool: "Tool" };

  /* Keep a scrolling container "stuck" to its bottom: stuck while the reader is at (or near)
   * the bottom, and still stuck when a layout change (a banner, a taller message) carried the
   * view off the bottom without the reader scrolling. */
  function follow(container) {
    if (container.tkFollow) return container.tkFollow;
    const state = { stuck: true };
    container.addEventListener("scroll", () => {
      state.stuck = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
    }, { passive: true });
    container.tkFollow = state;
    return state;
  }

  /* One line for a stored item (a message's payload: a tool call, a tool result, content
   * blocks, a reasoning step …), for agents' screens. */
  function clip(text) {
    const s = typeof text === "string" ? text : JSON.stringify(text);
    return s.length > 160 ? s.slice(0, 159) + "…" : s;
  }

  function partText(p) {
    if (!p || typeof p !== "object") return "";
    if (p.type === "function_call" || p.type === "custom_tool_call") return "→ " + p.name + "(" + clip(p.arguments || p.input || "") + ")";
    if (p.type === "tool_use" || p.type === "server_tool_use") return "→ " + p.name + "(" + clip(p.input || {}) + ")";
    if (p.function) return "→ " + p.function.name + "(" + clip(p.function.arguments || "") + ")";
    if (p.type === "function_call_output" || p.type === "custom_tool_call_output") return "← " + clip(p.output);
    if (p.type === "tool_result") return "← " + clip(p.content === undefined ? "" : p.content);
    if (p.role === "tool") return "← " + clip(p.content);
    if (p.type === "reasoning" || p.type === "thinking" || p.type === "redacted_thinking") return "(thinking)";
    if (typeof p.text === "string") return p.text;
    if (Array.isArray(p.content)) return p.content.map(partText).filter(Boolean).join(" ");
    if (typeof p.content === "string") return p.content;
    if (Array.isArray(p.tool_calls)) return p.tool_calls.map(partText).join(" ");
    if (p.message) return partText(p.message);
    return p.type ? "[" + p.type + "]" : "";
  }

  function itemText(m) {
    if (m.content || !m.payload) return m.content;
    return (Array.isArray(m.payload) ? m.payload.map(partText) : [partText(m.payload)])
      .filter(Boolean).join(" ");
  }

  /* Draws messages (oldest first) and pending sends into container, following new messages when
   * the reader was at the bottom (always after stick(container)). labels overrides ROLE_LABEL.
   * A visitor's view shows what people said, never tool calls, tool results or system notes;
   * with opts.agent, those show too, items (payloads) as one compact line each. */
  function renderTranscript(container, messages, pending, labels, opts) {
    const state = follow(container);
    const names = Object.assign({}, ROLE_LABEL, labels || {});
    const agent = Boolean(opts && opts.agent);
    container.textContent = "";
    messages.forEach((m) => {
      const item = !m.content && m.payload;
      if (!agent && (m.role === "tool" || m.role === "system" || item || !m.content)) return;
      const parts = [
        el("div", { className: "tk-who", text: (names[m.role] || m.role) + " · " + timeText(m.created_at) }),
        el("div", { className: "tk-text", dir: "auto", text: itemText(m) }),
      ];
      if (agent && m.delivery) parts.push(deliveryLine(m.delivery));
      container.appendChild(el("div", { className: "tk-msg tk-" + m.role + (item ? " tk-item" : ""), "data-role": m.role, "data-seq": String(m.seq) }, parts));
    });
    (pending || []).forEach((p) => {
      const role = p.role || "user";
      const cls = p.unsaved ? "tk-msg tk-" + role + " tk-unsaved" : "tk-msg tk-user tk-pending";
      const note = p.unsaved ? " · not saved" : p.waiting ? " · will send when back online" : " · sending…";
      container.appendChild(el("div", { className: cls, "data-role": role }, [
        el("div", { className: "tk-who", text: (names[role] || role) + note }),
        el("div", { className: "tk-text", dir: "auto", text: p.text }),
      ]));
    });
    if (state.stuck) container.scrollTop = container.scrollHeight;
  }

  /* How far a reply sent through a channel got: queued / sent / delivered / read / failed (with
   * the reason, e.g. outside WhatsApp's 24-hour window: a template is needed). */
  function deliveryLine(d) {
    const sending = d.state === "queued" && d.attempted_at ? "sending" : d.state;
    const text = "delivery: " + sending + (d.error ? " — " + d.error : "");
    return el("div", { className: "tk-delivery tk-small", "data-delivery": d.state, "data-testid": "delivery", text });
  }

  /* Follow the container's bottom again (one's own message is always shown). */
  function stick(container) {
    follow(container).stuck = true;
    container.scrollTop = container.scrollHeight;
  }

  /* A visitor sees people's words: never system or tool messages (the service leaves them out
   * for visitor tokens; a keyless local service sends everything, so the page filters too). */
  const VISITOR_ROLES = new Set(["user", "assistant", "agent"]);
  const shown = (m) => VISITOR_ROLES.has(m.role);

  function randomId(prefix) {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* One visitor conversation kept in the browser under `key`, so reloads, other tabs and other
   * pages of the site continue it. The contact id outlives a closed conversation (the next one
   * belongs to the same visitor). Messages typed while the server cannot be reached wait in an
   * outbox (kept across reloads) and are sent once, each with its own Idempotency-Key.
   * onChange(session) is called whenever anything changed. */
  class ChatSession {
    constructor(options) {
      this.base = options.base || "";
      this.key = options.key;
      this.onChange = options.onChange || (() => {});
      this.conversationId = null;
      this.contactId = null;
      this.token = null;
      this.conversation = null;
      this.messages = [];
      this.pending = [];    // [{key, text, waiting}] in the order typed: the outbox
      this.unsaved = [];    // [{role, text, unsaved: true}] answered while the store was down
      this.error = null;
      this.flushing = false;
      this.syncSoon = debounce(() => this.sync(), 120);
      window.addEventListener("storage", (e) => { if (e.key === this.key) this.adopt(false); });
      window.addEventListener("online", () => this.flush());
    }

    save() {
      storage.set(this.key, {
        conversation_id: this.conversationId,
        contact_id: this.contactId,
        visitor_token: this.token,
        outbox: this.pending.map((p) => ({ key: p.key, text: p.text })),
      });
    }

    /* Take the conversation from storage: at start (`initial`, which also takes over messages
     * an earlier page left unsent), or when another tab changed it (that tab still sends its
     * own outbox, so this one neither shows nor sends it, nor writes storage back). */
    adopt(initial = true) {
      const saved = storage.get(this.key, {}) || {};
      this.contactId = saved.contact_id || randomId("web-");
      this.token = saved.visitor_token || null;
      if (saved.conversation_id !== this.conversationId) {
        this.conversationId = saved.conversation_id || null;
        this.conversation = null;
        this.messages = [];
      }
      if (initial) {
        const mine = new Set(this.pending.map((p) => p.key));
        (saved.outbox || []).forEach((p) => { if (!mine.has(p.key)) this.pending.push({ key: p.key, text: p.text, waiting: true }); });
        this.save();
      }
      this.onChange(this);
      return this.reload().then(() => (initial ? this.flush() : undefined));
    }

    call(method, path, body, headers) {
      return api(this.base, method, path, body, headers, this.token);
    }

    async reload() {
      if (!this.conversationId) return;
      const id = this.conversationId;
      const path = "/v1/conversations/" + encodeURIComponent(id);
      const conv = await this.call("GET", path);
      if (id !== this.conversationId) return;
      if (conv.status === 401 && this.token) this.token = null;  // expired or from an old secret
      if (conv.status === 404 || conv.status === 401) { this.forget(); return; }
      if (!conv.ok) { this.error = conv.error; this.onChange(this); return; }
      this.conversation = conv.data;
      const msgs = await this.call("GET", path + "/messages?last=200");
      if (id !== this.conversationId) return;
      if (msgs.ok) { this.messages = msgs.data.items.filter(shown); this.error = null; } else this.error = msgs.error;
      this.dropDelivered();
      this.onChange(this);
    }

    /* Fetch what is new since the last message shown, and the conversation's status and stage. */
    async sync() {
      if (!this.conversationId) return;
      const id = this.conversationId;
      const last = this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
      const path = "/v1/conversations/" + encodeURIComponent(id);
      const [conv, msgs] = await Promise.all([
        this.call("GET", path),
        this.call("GET", path + "/messages?after=" + last + "&limit=200"),
      ]);
      if (id !== this.conversationId) return;
      if (conv.status === 404) { this.forget(); return; }
      if (conv.ok) this.conversation = conv.data;
      if (msgs.ok) this.merge(msgs.data.items);
      this.onChange(this);
    }

    merge(items) {
      let last = this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
      items.filter(shown).forEach((m) => {
        if (m.seq <= last) return;
        last = m.seq;
        this.messages.push(m);
      });
      this.dropDelivered();
    }

    /* A pending message whose Idempotency-Key is in the transcript was delivered. */
    dropDelivered() {
      const delivered = new Set(this.messages.map((m) => m.idempotency_key).filter(Boolean));
      const before = this.pending.length;
      this.pending = this.pending.filter((p) => !delivered.has(p.key));
      if (this.pending.length !== before) this.save();
    }

    forget() {
      this.conversationId = null;
      this.conversation = null;
      this.messages = [];
      this.save();
      this.onChange(this);
    }

    /* Start over as a new visitor (a new contact). */
    newChat() {
      this.contactId = randomId("web-");
      this.token = null;
      this.pending = [];
      this.unsaved = [];
      this.error = null;
      this.forget();
    }

    /* Queue `text` and send the outbox. */
    send(text) {
      text = (text || "").trim();
      if (!text) return Promise.resolve();
      this.pending.push({ key: randomId("msg-"), text, waiting: false });
      this.error = null;
      this.save();
      this.onChange(this);
      return this.flush();
    }

    get sending() { return this.flushing; }

    /* Send the queued messages in order, each once: a message whose send failed on the network
     * stays queued with its key and goes again when the browser is back online. */
    async flush() {
      if (this.flushing) return;
      this.flushing = true;
      try {
        while (this.pending.length) {
          const entry = this.pending[0];
          const res = await this.post(entry);
          if (res.status === 0) {
            this.pending.forEach((p) => { p.waiting = true; });
            this.error = "You are offline; your message will be sent when the connection is back.";
            this.onChange(this);
            return;
          }
          this.pending.shift();
          this.save();
          if (!res.ok) { this.error = res.error; this.onChange(this); continue; }
          await this.accept(res.data, entry);
        }
      } finally {
        this.flushing = false;
        this.onChange(this);
      }
    }

    async post(entry) {
      const body = { message: entry.text, contact_id: this.contactId };
      if (this.conversationId) body.conversation_id = this.conversationId;
      const headers = { "Idempotency-Key": entry.key };
      let res = await this.call("POST", "/v1/chat", body, headers);
      if (res.status === 401 && this.token) {
        // The visitor token expired (or its secret was retired): the browser's own id still
        // names the same contact, so the visitor continues as itself without it.
        this.token = null;
        this.conversationId = null;
        this.messages = [];
        delete body.conversation_id;
        res = await this.call("POST", "/v1/chat", body, headers);
      }
      const type = res.data && res.data.error && res.data.error.type;
      if (this.conversationId && (res.status === 404 || type === "ConversationClosed")) {
        // The conversation was closed or erased meanwhile: the same visitor starts a new one.
        this.conversationId = null;
        this.messages = [];
        delete body.conversation_id;
        res = await this.call("POST", "/v1/chat", body, headers);
      }
      return res;
    }

    async accept(data, entry) {
      this.error = null;
      if (data.visitor_token) this.token = data.visitor_token;
      if (data.persisted === false) {
        // The store was unreachable: the bot answered, but this exchange is not kept.
        this.unsaved.push({ role: "user", text: entry.text, unsaved: true });
        if (data.reply) this.unsaved.push({ role: "assistant", text: data.reply, unsaved: true });
        this.error = "The server could not save this exchange; it will not be in the history.";
        return;
      }
      if (data.conversation_id !== this.conversationId) {
        this.conversationId = data.conversation_id;
        this.messages = [];
      }
      this.save();
      this.conversation = Object.assign({}, this.conversation || {}, {
        id: data.conversation_id, status: data.status, stage: data.stage,
      });
      await this.sync();
    }

    /* React to one /v1/events event. */
    onEvent(event) {
      if (!this.conversationId || event.conversation_id !== this.conversationId) return;
      if (event.kind === "conversation.deleted") { this.forget(); return; }
      this.syncSoon();
    }
  }

  function setIndicator(node, state) {
    if (!node) return;
    const labels = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };
    node.dataset.state = state;
    node.className = "tk-live tk-live-" + state;
    node.textContent = labels[state] || state;
    node.title = state === "live" ? "Receiving changes as they happen" : "Changes are not arriving right now";
  }

  return {
    api, keyFromPage, setApiKey, errorText, storage, Live, ChatSession, debounce, el, timeText,
    renderTranscript, itemText, stick, setIndicator, randomId,
  };
})();
