/* threadkeep browser client, shared by the chat page, the dashboard and /widget.js.
 *
 * Plain ES2017, no dependencies: TK.api (fetch wrapper), TK.Live (EventSource on /v1/events
 * with a live / reconnecting / offline state), TK.ChatSession (one conversation kept in
 * localStorage, synced over SSE) and small DOM helpers.
 */
"use strict";

var TK = (function () {
  var EVENT_KINDS = [
    "conversation.started", "message.appended", "status.changed", "stage.changed",
    "state.saved", "conversation.closed", "conversation.deleted",
  ];

  function joinUrl(base, path) {
    return (base || "").replace(/\/+$/, "") + path;
  }

  /* The API key (a service with THREADKEEP_API_KEYS maps it to a tenant). A page takes it once
   * from its address (/dashboard#key=…) and keeps it in localStorage; the widget takes it from
   * its script tag (data-api-key). Without one, a keyless loopback service serves tenant
   * "default". */
  var KEY_STORE = "threadkeep.api_key";
  var apiKey = null;

  function setApiKey(key, persist) {
    apiKey = key || null;
    if (!persist) return;
    try {
      if (apiKey) localStorage.setItem(KEY_STORE, apiKey); else localStorage.removeItem(KEY_STORE);
    } catch (err) { /* storage disabled: the key lasts for this page only */ }
  }

  /* Read key=… from the page's #fragment (then drop it from the address bar), else the key
   * saved by an earlier visit. Returns the fragment's other parameters. */
  function keyFromPage() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var key = params.get("key");
    if (key) {
      setApiKey(key, true);
      params.delete("key");
      var rest = params.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    } else {
      try { apiKey = localStorage.getItem(KEY_STORE) || null; } catch (err) { apiKey = null; }
    }
    return params;
  }

  /* One HTTP call. Never throws: network failures come back with status 0. */
  async function api(base, method, path, body, headers) {
    var init = { method: method, headers: Object.assign({ Accept: "application/json" }, headers || {}) };
    if (apiKey) init.headers.Authorization = "Bearer " + apiKey;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var res;
    try {
      res = await fetch(joinUrl(base, path), init);
    } catch (err) {
      return { ok: false, status: 0, data: null, etag: null, error: "The server cannot be reached." };
    }
    var data = null;
    var text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (err) { data = text; }
    }
    var out = { ok: res.ok, status: res.status, data: data, etag: res.headers.get("ETag"), error: null };
    if (!res.ok) out.error = errorText(res.status, data);
    return out;
  }

  function errorText(status, data) {
    if (status === 401) {
      return "This service needs an API key: open this page as " + location.pathname +
        "#key=YOUR_KEY (it is then remembered in this browser).";
    }
    if (data && typeof data === "object") {
      if (data.error && data.error.message) return data.error.message;
      if (typeof data.detail === "string") return data.detail;
      if (Array.isArray(data.detail) && data.detail.length && data.detail[0].msg) return data.detail[0].msg;
    }
    if (typeof data === "string" && data) return data.slice(0, 200);
    return "HTTP " + status;
  }

  /* The version number inside an ETag such as "3", W/"3" or 3. */
  function etagVersion(etag) {
    if (!etag) return null;
    var m = /(\d+)/.exec(etag);
    return m ? parseInt(m[1], 10) : null;
  }

  /* Follows /v1/events. onEvent(event) gets {id, kind, conversation_id, data}; onState(state)
   * gets "live", "reconnecting" or "offline"; onResync() is called after every reconnection,
   * since events may have been missed while the stream was down. */
  function Live(base, onEvent, onState, onResync) {
    this.base = base;
    this.onEvent = onEvent;
    this.onState = onState || function () {};
    this.onResync = onResync || function () {};
    this.source = null;
    this.failures = 0;
    this.opened = false;
    this.timer = null;
    this.seen = {};
    this.seenCount = 0;
    this.state = null;
    var self = this;
    window.addEventListener("offline", function () { self.setState("offline"); });
    window.addEventListener("online", function () { self.restart(); });
  }

  Live.prototype.setState = function (state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  };

  Live.prototype.start = function () {
    var self = this;
    if (this.source) this.source.close();
    this.setState(this.opened ? "reconnecting" : (this.state || "reconnecting"));
    // EventSource cannot send headers: the events stream takes the key in its URL.
    var url = joinUrl(this.base, "/v1/events") + (apiKey ? "?api_key=" + encodeURIComponent(apiKey) : "");
    var source = new EventSource(url);
    this.source = source;
    source.onopen = function () {
      var again = self.opened;
      self.opened = true;
      self.failures = 0;
      self.setState("live");
      if (again) self.onResync();
    };
    source.onerror = function () {
      if (source !== self.source) return;
      self.failures += 1;
      var down = !navigator.onLine || self.failures >= 3;
      self.setState(down ? "offline" : "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (a 410 for an expired cursor, a 5xx …): start afresh.
        var delay = Math.min(10000, 500 * Math.pow(2, Math.min(self.failures, 5)));
        clearTimeout(self.timer);
        self.timer = setTimeout(function () { self.opened = true; self.start(); }, delay);
      }
    };
    var handler = function (msg) { self.dispatch(msg); };
    source.onmessage = handler;
    EVENT_KINDS.forEach(function (kind) { source.addEventListener(kind, handler); });
  };

  Live.prototype.restart = function () {
    clearTimeout(this.timer);
    this.failures = 0;
    this.start();
  };

  Live.prototype.dispatch = function (msg) {
    if (msg.lastEventId) {
      if (this.seen[msg.lastEventId]) return;
      if (++this.seenCount > 5000) { this.seen = {}; this.seenCount = 0; }
      this.seen[msg.lastEventId] = true;
    }
    var data = {};
    try { data = JSON.parse(msg.data || "{}"); } catch (err) { data = {}; }
    var event = {
      id: data.id || msg.lastEventId || null,
      kind: data.kind || (msg.type !== "message" ? msg.type : null),
      conversation_id: data.conversation_id || (data.data && data.data.conversation_id) || null,
      data: data.data || data,
    };
    this.onEvent(event);
  };

  /* A function that runs fn at most once per `ms`, the last call winning. */
  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function timeText(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    var now = new Date();
    var sameDay = date.toDateString() === now.toDateString();
    return sameDay ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  var ROLE_LABEL = { user: "You", assistant: "Bot", agent: "Agent", system: "System", tool: "Tool" };

  /* Draws messages (oldest first) and pending sends into container; keeps the scroll at the
   * bottom when it was there. labels overrides ROLE_LABEL (the dashboard calls users "Contact"). */
  function renderTranscript(container, messages, pending, labels) {
    var atBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
    var names = Object.assign({}, ROLE_LABEL, labels || {});
    container.textContent = "";
    messages.forEach(function (m) {
      container.appendChild(el("div", { className: "tk-msg tk-" + m.role, "data-role": m.role, "data-seq": String(m.seq) }, [
        el("div", { className: "tk-who", text: (names[m.role] || m.role) + " · " + timeText(m.created_at) }),
        el("div", { className: "tk-text", text: m.content }),
      ]));
    });
    (pending || []).forEach(function (p) {
      var role = p.role || "user";
      var cls = p.role ? "tk-msg tk-" + role + " tk-unsaved" : "tk-msg tk-user tk-pending";
      container.appendChild(el("div", { className: cls, "data-role": role }, [
        el("div", { className: "tk-who", text: (names[role] || role) + (p.role ? " · not saved" : " · sending…") }),
        el("div", { className: "tk-text", text: p.role ? p.content : p.text }),
      ]));
    });
    if (atBottom || !container.dataset.drawn) container.scrollTop = container.scrollHeight;
    container.dataset.drawn = "1";
  }

  function randomId(prefix) {
    var bytes = new Uint8Array(6);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return prefix + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  /* One visitor conversation kept in localStorage under `key`, so reloads, other tabs and other
   * pages of the site continue it. onChange(session) is called whenever anything changed. */
  function ChatSession(options) {
    this.base = options.base || "";
    this.key = options.key;
    this.onChange = options.onChange || function () {};
    this.conversationId = null;
    this.contactId = null;
    this.conversation = null;
    this.messages = [];
    this.pending = [];
    this.unsaved = [];
    this.error = null;
    this.sending = false;
    var self = this;
    this.syncSoon = debounce(function () { self.sync(); }, 120);
    window.addEventListener("storage", function (e) {
      if (e.key === self.key) self.adopt();
    });
  }

  ChatSession.prototype.saved = function () {
    try { return JSON.parse(localStorage.getItem(this.key) || "null") || {}; } catch (err) { return {}; }
  };

  ChatSession.prototype.save = function () {
    localStorage.setItem(this.key, JSON.stringify({ conversation_id: this.conversationId, contact_id: this.contactId }));
  };

  /* Take the conversation from localStorage (at start, or when another tab changed it). */
  ChatSession.prototype.adopt = function () {
    var saved = this.saved();
    this.contactId = saved.contact_id || randomId("web-");
    if (saved.conversation_id !== this.conversationId) {
      this.conversationId = saved.conversation_id || null;
      this.conversation = null;
      this.messages = [];
      this.pending = [];
    }
    if (!saved.contact_id) this.save();
    this.onChange(this);
    return this.reload();
  };

  ChatSession.prototype.reload = async function () {
    if (!this.conversationId) return;
    var id = this.conversationId;
    var conv = await api(this.base, "GET", "/v1/conversations/" + encodeURIComponent(id));
    if (id !== this.conversationId) return;
    if (conv.status === 404) { this.forget(); return; }
    if (!conv.ok) { this.error = conv.error; this.onChange(this); return; }
    this.conversation = conv.data;
    var msgs = await api(this.base, "GET", "/v1/conversations/" + encodeURIComponent(id) + "/messages?last=200");
    if (id !== this.conversationId) return;
    if (msgs.ok) { this.messages = (msgs.data && msgs.data.items) || []; this.error = null; }
    else this.error = msgs.error;
    this.onChange(this);
  };

  /* Fetch what is new since the last message shown, and the conversation's status and stage. */
  ChatSession.prototype.sync = async function () {
    if (!this.conversationId) return;
    var id = this.conversationId;
    var last = this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
    var path = "/v1/conversations/" + encodeURIComponent(id);
    var results = await Promise.all([
      api(this.base, "GET", path),
      api(this.base, "GET", path + "/messages?after=" + last + "&limit=200"),
    ]);
    if (id !== this.conversationId) return;
    if (results[0].status === 404) { this.forget(); return; }
    if (results[0].ok) this.conversation = results[0].data;
    if (results[1].ok) this.merge((results[1].data && results[1].data.items) || []);
    this.onChange(this);
  };

  ChatSession.prototype.merge = function (items) {
    var self = this;
    var last = this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
    items.forEach(function (m) {
      if (m.seq <= last) return;
      last = m.seq;
      self.messages.push(m);
      if (m.role === "user") {
        var i = self.pending.findIndex(function (p) { return p.text === m.content; });
        if (i >= 0) self.pending.splice(i, 1);
      }
    });
  };

  ChatSession.prototype.forget = function () {
    this.conversationId = null;
    this.conversation = null;
    this.messages = [];
    this.save();
    this.onChange(this);
  };

  ChatSession.prototype.newChat = function () {
    this.contactId = randomId("web-");
    this.pending = [];
    this.unsaved = [];
    this.error = null;
    this.forget();
  };

  ChatSession.prototype.send = async function (text) {
    text = (text || "").trim();
    if (!text) return;
    var entry = { text: text };
    this.pending.push(entry);
    this.error = null;
    this.sending = true;
    this.onChange(this);
    var closed = this.conversation && this.conversation.status === "closed";
    var res = closed ? { ok: false, status: 409, data: null } : await this.post(text);
    var type = res.data && res.data.error && res.data.error.type;
    var gone = res.status === 404 || (res.status === 409 && (closed || type === "ConversationClosed"));
    if (!res.ok && gone && this.conversationId) {
      // The conversation was closed or erased meanwhile: the next message starts a new one.
      this.conversationId = null;
      this.contactId = randomId("web-");
      this.messages = [];
      res = await this.post(text);
    }
    this.sending = false;
    if (!res.ok) {
      this.pending.splice(this.pending.indexOf(entry), 1);
      this.error = res.error;
      this.onChange(this);
      return res;
    }
    var data = res.data || {};
    if (data.conversation_id && data.conversation_id !== this.conversationId) {
      this.conversationId = data.conversation_id;
      this.save();
    }
    this.conversation = Object.assign({}, this.conversation || {}, {
      id: data.conversation_id, status: data.status, stage: data.stage,
    });
    await this.sync();
    var i = this.pending.indexOf(entry);
    if (i >= 0) this.pending.splice(i, 1);
    if (data.persisted === false) {
      // The store was unreachable: the bot answered, but this turn is not kept.
      this.unsaved.push({ role: "user", content: text }, { role: "assistant", content: data.reply || "" });
      this.error = "The server could not save this exchange; it will not be in the history.";
    }
    this.onChange(this);
    return res;
  };

  ChatSession.prototype.post = function (text) {
    var body = { message: text, contact_id: this.contactId };
    if (this.conversationId) body.conversation_id = this.conversationId;
    return api(this.base, "POST", "/v1/chat", body);
  };

  /* React to one /v1/events event. */
  ChatSession.prototype.onEvent = function (event) {
    if (!this.conversationId || event.conversation_id !== this.conversationId) return;
    if (event.kind === "conversation.deleted") { this.forget(); return; }
    this.syncSoon();
  };

  function setIndicator(node, state) {
    if (!node) return;
    var labels = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };
    node.dataset.state = state;
    node.className = "tk-live tk-live-" + state;
    node.textContent = labels[state] || state;
    node.title = state === "live" ? "Receiving changes as they happen" : "Changes are not arriving right now";
  }

  return {
    api: api,
    etagVersion: etagVersion,
    keyFromPage: keyFromPage,
    setApiKey: setApiKey,
    errorText: errorText,
    Live: Live,
    ChatSession: ChatSession,
    debounce: debounce,
    el: el,
    timeText: timeText,
    renderTranscript: renderTranscript,
    setIndicator: setIndicator,
    randomId: randomId,
  };
})();
