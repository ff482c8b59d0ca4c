/* The dashboard at "/dashboard": conversations newest activity first, live over /v1/events;
 * a click opens the transcript and the state; an agent can take over, reply, hand back, close,
 * and edit the stage and state (If-Match; a 412 shows what changed and offers reload/re-apply). */
"use strict";

(function () {
  var $ = function (id) { return document.getElementById(id); };
  var api = function (method, path, body, headers) { return TK.api("", method, path, body, headers); };
  var STAGES = ["Q0", "Q1", "Q2", "Q3", "Q4", "QUALIFIED", "STALLED"];
  var PAGE = 50;

  var filters = { status: "", stage: "" };
  var items = [];
  var nextCursor = null;
  var counts = null;
  var temps = {};        // conversation id -> {version, temperature}
  var changed = {};      // conversation ids touched by events since the last draw (flash)
  var selected = null;   // the open conversation id
  var detail = null;     // {conversation, messages}
  var st = null;         // the state editor: {base, version, etag, fields: {key: text}, extra: []}
  var serverState = null; // the latest state seen on the server for the selected conversation

  function conversationPath(id) { return "/v1/conversations/" + encodeURIComponent(id); }

  /* ---------- the list ---------- */

  function query(cursor) {
    var params = new URLSearchParams();
    if (filters.status) params.set("status", filters.status);
    if (filters.stage) params.set("stage", filters.stage);
    params.set("limit", String(PAGE));
    if (cursor) params.set("cursor", cursor);
    return "/v1/conversations?" + params.toString();
  }

  async function loadList() {
    var res = await api("GET", query(null));
    $("list-error").hidden = res.ok;
    if (!res.ok) { $("list-error").textContent = res.error; return; }
    items = res.data.items || [];
    nextCursor = res.data.next_cursor || null;
    drawList();
    loadTemperatures();
  }

  async function loadMore() {
    if (!nextCursor) return;
    var res = await api("GET", query(nextCursor));
    if (!res.ok) return;
    items = items.concat(res.data.items || []);
    nextCursor = res.data.next_cursor || null;
    drawList();
    loadTemperatures();
  }

  async function loadCounts() {
    var res = await api("GET", "/v1/counts");
    if (res.ok) { counts = res.data; drawCounts(); }
  }

  /* GET .../state answers {value, version, saved_at}; the version is also the ETag. */
  function stateValue(data) {
    return data && typeof data === "object" ? data.value : null;
  }

  function stateVersion(res) {
    var v = res.data && typeof res.data.version === "number" ? res.data.version : TK.etagVersion(res.etag);
    return v || 0;
  }

  /* Temperatures come from each conversation's state; fetched only when its version moved. */
  function loadTemperatures() {
    items.forEach(function (c) {
      var version = c.state_version || 0;
      var known = temps[c.id];
      if (!version || (known && known.version === version)) return;
      temps[c.id] = { version: version, temperature: known ? known.temperature : null };
      api("GET", conversationPath(c.id) + "/state").then(function (res) {
        if (!res.ok) return;
        var value = stateValue(res.data) || {};
        temps[c.id] = { version: stateVersion(res), temperature: value.temperature || null };
        drawList();
      });
    });
  }

  function tempBadge(t) {
    return t ? TK.el("span", { className: "tk-badge tk-temp-" + t, text: t }) : TK.el("span", { className: "tk-small", text: "–" });
  }

  function drawList() {
    var body = $("rows");
    body.textContent = "";
    items.forEach(function (c) {
      var temp = temps[c.id] && temps[c.id].temperature;
      var row = TK.el("tr", { className: "row", "data-id": c.id, "data-testid": "row" }, [
        TK.el("td", {}, [
          TK.el("div", { className: "tk-contact", text: c.contact_id }),
          TK.el("div", { className: "tk-small", text: c.channel || "" }),
        ]),
        TK.el("td", {}, [TK.el("span", { className: "tk-badge", "data-status": c.status, text: c.status })]),
        TK.el("td", { text: c.stage || "–" }),
        TK.el("td", {}, [tempBadge(temp)]),
        TK.el("td", { className: "tk-hide-narrow", "data-testid": "count", text: String(c.message_count) }),
        TK.el("td", { className: "tk-small", text: TK.timeText(c.last_activity_at) }),
      ]);
      if (c.id === selected) row.classList.add("selected");
      if (changed[c.id]) row.classList.add("flash");
      row.addEventListener("click", function () { select(c.id); });
      body.appendChild(row);
    });
    changed = {};
    $("list-empty").hidden = items.length > 0;
    $("more").hidden = !nextCursor;
  }

  function drawCounts() {
    var box = $("counts");
    box.textContent = "";
    if (!counts) return;
    $("total").textContent = "(" + counts.total + ")";
    Object.keys(counts.by_status || {}).sort().forEach(function (s) {
      var chip = TK.el("span", { className: "tk-badge" + (filters.status === s ? " on" : ""), "data-status": s,
        "data-testid": "count-status-" + s, text: s + " " + counts.by_status[s] });
      chip.addEventListener("click", function () { setFilter("status", filters.status === s ? "" : s); });
      box.appendChild(chip);
    });
    Object.keys(counts.by_stage || {}).sort().forEach(function (s) {
      var chip = TK.el("span", { className: "tk-badge tk-stage" + (filters.stage === s ? " on" : ""),
        "data-testid": "count-stage-" + s, text: "stage " + s + " " + counts.by_stage[s] });
      chip.addEventListener("click", function () { setFilter("stage", filters.stage === s ? "" : s); });
      box.appendChild(chip);
    });
    var select = $("f-stage");
    var known = STAGES.concat(Object.keys(counts.by_stage || {})).filter(function (s, i, all) { return all.indexOf(s) === i; });
    var current = select.value;
    select.textContent = "";
    select.appendChild(TK.el("option", { value: "", text: "all" }));
    known.forEach(function (s) { select.appendChild(TK.el("option", { value: s, text: s })); });
    select.value = current;
  }

  function setFilter(name, value) {
    filters[name] = value;
    $("f-" + name).value = value;
    loadList();
    drawCounts();
  }

  /* ---------- the selected conversation ---------- */

  function select(id) {
    if (selected !== id) {
      selected = id;
      detail = null;
      st = null;
      serverState = null;
      $("conflict").hidden = true;
      $("d-transcript").dataset.drawn = "";
      history.replaceState(null, "", "#c=" + encodeURIComponent(id));
    }
    drawList();
    loadDetail(true);
  }

  async function loadDetail(withState) {
    if (!selected) return;
    var id = selected;
    var path = conversationPath(id);
    var conv = await api("GET", path);
    if (id !== selected) return;
    if (!conv.ok) {
      showDetailError(conv.status === 404 ? "This conversation no longer exists." : conv.error);
      return;
    }
    var msgs = await api("GET", path + "/messages?last=200");
    if (id !== selected) return;
    detail = { conversation: conv.data, messages: (msgs.ok && msgs.data.items) || [] };
    showDetailError(null);
    drawDetail();
    if (withState) await loadState();
  }

  function showDetailError(text) {
    $("d-error").hidden = !text;
    $("d-error").textContent = text || "";
  }

  function drawDetail() {
    $("detail-empty").hidden = !!detail;
    $("detail-body").hidden = !detail;
    if (!detail) return;
    var c = detail.conversation;
    $("d-contact").textContent = c.contact_id;
    $("d-status").textContent = c.status;
    $("d-status").dataset.status = c.status;
    $("d-stage").textContent = "stage " + (c.stage || "–");
    $("d-id").textContent = c.id;
    var temp = serverState && serverState.value && serverState.value.temperature;
    $("d-temp").hidden = !temp;
    $("d-temp").className = "tk-badge tk-temp-" + temp;
    $("d-temp").textContent = temp || "";
    $("take-over").disabled = c.status === "waiting_agent" || c.status === "closed";
    $("hand-back").disabled = c.status !== "waiting_agent";
    $("close-conv").disabled = c.status === "closed";
    $("agent-input").disabled = c.status === "closed";
    $("agent-send").disabled = c.status === "closed";
    if (document.activeElement !== $("stage-input")) $("stage-input").value = c.stage || "";
    TK.renderTranscript($("d-transcript"), detail.messages, [], { user: "Contact" });
  }

  async function setStatus(status) {
    var res = await api("POST", conversationPath(selected) + "/status", { status: status });
    showDetailError(res.ok ? null : res.error);
    await loadDetail(false);
  }

  async function agentReply(text) {
    var res = await api("POST", conversationPath(selected) + "/messages", { role: "agent", content: text },
      { "Idempotency-Key": TK.randomId("agent-") });
    showDetailError(res.ok ? null : res.error);
    await loadDetail(false);
  }

  async function setStage(stage) {
    var res = await api("PUT", conversationPath(selected) + "/stage", { stage: stage || null });
    showDetailError(res.ok ? null : res.error);
    await loadDetail(false);
  }

  /* ---------- the state editor ---------- */

  function fieldText(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    return JSON.stringify(value);
  }

  /* Turn the text of a field back into a value, keeping the type the field had. */
  function parseField(text, original) {
    if (typeof original === "string") return text;
    if (text.trim() === "") return null;
    try { return JSON.parse(text); } catch (err) {
      if (typeof original === "number" || typeof original === "boolean" || (original && typeof original === "object")) {
        throw new Error("not valid JSON: " + text);
      }
      return text;
    }
  }

  function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  async function fetchState() {
    var res = await api("GET", conversationPath(selected) + "/state");
    if (!res.ok && res.status !== 404) return { error: res.error };
    if (!res.ok) return { value: {}, version: 0, etag: null };
    var value = stateValue(res.data);
    return { value: value && typeof value === "object" ? value : {}, version: stateVersion(res), etag: res.etag };
  }

  async function loadState() {
    var id = selected;
    var s = await fetchState();
    if (id !== selected) return;
    if (s.error) { $("s-msg").textContent = s.error; return; }
    serverState = s;
    var editing = true;
    try { editing = !!st && edits().length > 0; } catch (err) { editing = true; }  // half-typed JSON
    if (!editing) {
      st = { base: s.value, version: s.version, etag: s.etag, fields: {} };
      drawState();
    } else if (s.version !== st.version) {
      $("s-remote").hidden = false;
      $("s-remote").textContent = "Saved on another screen: version " + s.version +
        " (your edit is based on version " + st.version + "). Saving now will show what changed.";
    }
    drawDetail();
  }

  /* The keys whose input differs from the version the edit started from: [[key, value]]. */
  function edits() {
    if (!st) return [];
    var out = [];
    Object.keys(st.fields).forEach(function (key) {
      var value = parseField(st.fields[key], st.base[key]);
      if (!(key in st.base) || !same(value, st.base[key])) out.push([key, value]);
    });
    return out;
  }

  function drawState() {
    var body = $("s-fields");
    body.textContent = "";
    $("s-remote").hidden = true;
    $("s-version").textContent = st.version ? "version " + st.version : "nothing saved yet";
    $("s-version").dataset.version = String(st.version);
    var keys = Object.keys(st.base).concat(Object.keys(st.fields).filter(function (k) { return !(k in st.base); }));
    keys.forEach(function (key) {
      var original = st.base[key];
      var text = key in st.fields ? st.fields[key] : fieldText(original);
      var input;
      if (typeof original === "boolean" || (original === null && typeof parseSafe(text) === "boolean")) {
        input = TK.el("select", {}, [
          TK.el("option", { value: "", text: "(none)" }),
          TK.el("option", { value: "true", text: "true" }),
          TK.el("option", { value: "false", text: "false" }),
        ]);
        input.value = text;
      } else {
        input = TK.el("input", { type: "text" });
        input.value = text;
      }
      input.dataset.field = key;
      input.setAttribute("data-testid", "field-" + key);
      var mark = function () {
        st.fields[key] = input.value;
        var value;
        try { value = parseField(input.value, original); } catch (err) { value = undefined; }
        input.classList.toggle("changed", !(key in st.base) || !same(value, original));
      };
      input.addEventListener("input", mark);
      input.addEventListener("change", mark);
      if (key in st.fields) mark();
      body.appendChild(TK.el("tr", {}, [TK.el("td", { text: key }), TK.el("td", {}, [input])]));
    });
  }

  function parseSafe(text) { try { return JSON.parse(text); } catch (err) { return text; } }

  /* Save `value` expecting `version`; on 412 show the conflict. */
  async function putState(value, version, etag) {
    var headers = { "If-Match": etag || ('"' + version + '"') };
    var res = await api("PUT", conversationPath(selected) + "/state", { value: value }, headers);
    if (res.status === 412) { await showConflict(); return false; }
    if (!res.ok) { $("s-msg").textContent = res.error; return false; }
    $("conflict").hidden = true;
    st = null;
    await loadState();
    $("s-msg").textContent = "Saved.";
    clearTimeout(putState.timer);
    putState.timer = setTimeout(function () { $("s-msg").textContent = ""; }, 2500);
    return true;
  }

  async function saveState() {
    var changes;
    try { changes = edits(); } catch (err) { $("s-msg").textContent = err.message; return; }
    if (!changes.length) { $("s-msg").textContent = "Nothing changed."; return; }
    var value = Object.assign({}, st.base);
    changes.forEach(function (kv) { value[kv[0]] = kv[1]; });
    await putState(value, st.version, st.etag);
  }

  async function showConflict() {
    var id = selected;
    var server = await fetchState();
    if (id !== selected || server.error) return;
    serverState = server;
    var mine = {};
    edits().forEach(function (kv) { mine[kv[0]] = kv[1]; });
    var keys = Object.keys(Object.assign({}, st.base, server.value, mine)).filter(function (k) {
      return k in mine || !same(st.base[k], server.value[k]);
    });
    var rows = $("conflict-rows");
    rows.textContent = "";
    keys.forEach(function (k) {
      var clash = k in mine && !same(st.base[k], server.value[k]) && !same(mine[k], server.value[k]);
      rows.appendChild(TK.el("tr", { "data-field": k, className: clash ? "clash" : "" }, [
        TK.el("td", {}, [TK.el("strong", { text: k })]),
        TK.el("td", { text: fieldText(st.base[k]) || "–" }),
        TK.el("td", { text: k in mine ? fieldText(mine[k]) || "(empty)" : "(unchanged)" }),
        TK.el("td", { "data-testid": "server-" + k, text: fieldText(server.value[k]) || "–" }),
      ]));
    });
    $("conflict-text").textContent = "You edited version " + st.version + "; the server is now at version " +
      server.version + ". Reload to take theirs, or re-apply your changed fields on top of version " + server.version + ".";
    $("conflict").hidden = false;
  }

  async function conflictReload() {
    $("conflict").hidden = true;
    st = null;
    await loadState();
  }

  async function conflictReapply() {
    var server = await fetchState();
    if (server.error) return;
    var value = Object.assign({}, server.value);
    edits().forEach(function (kv) { value[kv[0]] = kv[1]; });
    await putState(value, server.version, server.etag);
  }

  function addField() {
    var key = $("new-key").value.trim();
    if (!key || !st) return;
    st.fields[key] = $("new-value").value;
    $("new-key").value = "";
    $("new-value").value = "";
    drawState();
  }

  /* ---------- live ---------- */

  var refreshList = TK.debounce(function () { loadList(); loadCounts(); }, 250);
  var refreshDetail = TK.debounce(function () { loadDetail(false); }, 150);
  var refreshState = TK.debounce(function () { loadState(); }, 150);

  function onEvent(event) {
    if (event.conversation_id) changed[event.conversation_id] = true;
    refreshList();
    if (selected && event.conversation_id === selected) {
      if (event.kind === "conversation.deleted") { selected = null; detail = null; drawDetail(); return; }
      refreshDetail();
      if (event.kind === "state.saved" || !event.kind) refreshState();
    }
  }

  var live = new TK.Live("", onEvent, function (state) { TK.setIndicator($("live"), state); }, function () {
    refreshList();
    if (selected) loadDetail(true);
  });

  /* ---------- wiring ---------- */

  $("f-status").addEventListener("change", function () { setFilter("status", this.value); });
  $("f-stage").addEventListener("change", function () { setFilter("stage", this.value); });
  $("refresh").addEventListener("click", function () { loadList(); loadCounts(); });
  $("more").addEventListener("click", loadMore);
  $("take-over").addEventListener("click", function () { setStatus("waiting_agent"); });
  $("hand-back").addEventListener("click", function () { setStatus("active"); });
  $("close-conv").addEventListener("click", function () { setStatus("closed"); });
  $("agent-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("agent-input").value.trim();
    if (!text) return;
    $("agent-input").value = "";
    agentReply(text);
  });
  $("stage-save").addEventListener("click", function () { setStage($("stage-input").value.trim()); });
  $("state-save").addEventListener("click", saveState);
  $("state-discard").addEventListener("click", conflictReload);
  $("conflict-reload").addEventListener("click", conflictReload);
  $("conflict-reapply").addEventListener("click", conflictReapply);
  $("add-field").addEventListener("click", addField);

  var hash = TK.keyFromPage();

  (async function main() {
    live.start();
    await Promise.all([loadList(), loadCounts()]);
    if (hash.get("c")) select(hash.get("c"));
    document.body.dataset.ready = "1";
  })();
})();
