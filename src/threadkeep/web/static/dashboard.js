/* The dashboard at "/dashboard": conversations newest activity first, live over /v1/events;
 * a click opens the transcript, the lead summary and the state; an agent can take over, reply,
 * hand back, close, and edit the stage and state (If-Match; a 412 shows what changed and offers
 * reload/re-apply). It knows no bot: stages come from the tenant's playbook and /v1/counts
 * (TKPlaybook), the buttons from each conversation's allowed_statuses, the state's fields from
 * the bot's schema (TKState); the playbook's guidance shows beside the transcript. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const api = (method, path, body, headers) => TK.api("", method, path, body, headers);
  const conversationPath = (id) => "/v1/conversations/" + encodeURIComponent(id);
  const PAGE = 50;

  /* Everything the page knows; drawn by the draw* functions. */
  const view = {
    filters: { status: "", stage: "" },
    items: [],
    nextCursor: null,
    counts: null,
    changed: new Set(),   // conversation ids touched by events since the last draw (flash)
    selected: null,       // the open conversation id
    detail: null,         // {conversation, messages, related}
    schema: undefined,    // the bot's state schema (null: free-form state; undefined: not asked)
    editor: null,         // {base, version, etag, inputs: {key: text}, fields}
    server: null,         // the latest state seen on the server: {value, version, etag, problems}
    msgTimer: null,
  };

  /* ---------- the list ---------- */

  function query(cursor) {
    const params = new URLSearchParams();
    if (view.filters.status) params.set("status", view.filters.status);
    if (view.filters.stage) params.set("stage", view.filters.stage);
    params.set("limit", String(PAGE));
    if (cursor) params.set("cursor", cursor);
    return "/v1/conversations?" + params.toString();
  }

  async function loadList() {
    const res = await api("GET", query(null));
    $("list-error").hidden = res.ok;
    if (!res.ok) { $("list-error").textContent = res.error; return; }
    view.items = res.data.items;
    view.nextCursor = res.data.next_cursor;
    drawList();
  }

  async function loadMore() {
    if (!view.nextCursor) return;
    const res = await api("GET", query(view.nextCursor));
    if (!res.ok) return;
    view.items = view.items.concat(res.data.items);
    view.nextCursor = res.data.next_cursor;
    drawList();
  }

  async function loadCounts() {
    const res = await api("GET", "/v1/counts");
    if (res.ok) { view.counts = res.data; drawCounts(); }
  }

  /* A label that may wrap after its underscores on a narrow screen ("waiting_" / "agent"). */
  function breakable(text) {
    const parts = [];
    text.split("_").forEach((part, i, all) => {
      parts.push(i < all.length - 1 ? part + "_" : part);
      if (i < all.length - 1) parts.push(document.createElement("wbr"));
    });
    return parts;
  }

  function drawList() {
    const body = $("rows");
    body.textContent = "";
    view.items.forEach((c) => {
      const row = TK.el("tr", { className: "row", "data-id": c.id, "data-testid": "row" }, [
        TK.el("td", {}, [
          TK.el("div", { className: "tk-contact", dir: "auto", text: c.contact_id }),
          TK.el("div", { className: "tk-small", text: [c.channel, c.agent_id && "agent " + c.agent_id].filter(Boolean).join(" · ") }),
        ]),
        TK.el("td", {}, [TK.el("span", { className: "tk-badge", "data-status": c.status }, breakable(c.status))]),
        TK.el("td", { text: c.stage || "–" }),
        TK.el("td", { className: "tk-hide-narrow", "data-testid": "count", text: String(c.message_count) }),
        TK.el("td", { className: "tk-small", text: TK.timeText(c.last_activity_at) }),
      ]);
      if (c.id === view.selected) row.classList.add("selected");
      if (view.changed.has(c.id)) row.classList.add("flash");
      row.addEventListener("click", () => select(c.id, true));
      body.appendChild(row);
    });
    view.changed.clear();
    $("list-empty").hidden = view.items.length > 0;
    $("more").hidden = !view.nextCursor;
  }

  function chip(text, on, attrs, onClick) {
    const node = TK.el("span", Object.assign({ className: "tk-badge" + (on ? " on" : ""), text }, attrs));
    node.addEventListener("click", onClick);
    return node;
  }

  function drawCounts() {
    const counts = view.counts;
    const box = $("counts");
    box.textContent = "";
    if (!counts) return;
    $("total").textContent = "(" + counts.total + ")";
    const waiting = counts.by_status.waiting_agent || 0;
    $("waiting").hidden = !waiting;
    $("waiting").textContent = waiting + " waiting for an agent";
    Object.keys(counts.by_status).sort().forEach((s) => {
      box.appendChild(chip(s + " " + counts.by_status[s], view.filters.status === s,
        { "data-status": s, "data-testid": "count-status-" + s },
        () => setFilter("status", view.filters.status === s ? "" : s)));
    });
    const stages = TKPlaybook.order(Object.keys(counts.by_stage));
    stages.forEach((s) => {
      box.appendChild(chip("stage " + TKPlaybook.label(s) + " " + counts.by_stage[s], view.filters.stage === s,
        { className: "tk-badge tk-stage" + (view.filters.stage === s ? " on" : ""), "data-testid": "count-stage-" + s },
        () => setFilter("stage", view.filters.stage === s ? "" : s)));
    });
    const stageSelect = $("f-stage");
    const current = stageSelect.value;
    stageSelect.textContent = "";
    stageSelect.appendChild(TK.el("option", { value: "", text: "all" }));
    TKPlaybook.filterStages(stages.concat(current ? [current] : []))
      .forEach((s) => stageSelect.appendChild(TK.el("option", { value: s, text: TKPlaybook.label(s) })));
    stageSelect.value = current;
  }

  function setFilter(name, value) {
    view.filters[name] = value;
    $("f-" + name).value = value;
    loadList();
    drawCounts();
  }

  /* ---------- the selected conversation ---------- */

  function select(id, tapped) {
    if (view.selected !== id) {
      view.selected = id;
      view.detail = null;
      view.editor = null;
      view.server = null;
      $("conflict").hidden = true;
      history.replaceState(null, "", "#c=" + encodeURIComponent(id));
    }
    drawList();
    loadDetail(true).then(() => {
      // On a phone the detail is below the list: bring it into view.
      if (tapped && window.innerWidth < 900) $("detail").scrollIntoView({ block: "start" });
    });
  }

  async function loadDetail(withState) {
    if (!view.selected) return;
    const id = view.selected;
    const path = conversationPath(id);
    const conv = await api("GET", path);
    if (id !== view.selected) return;
    if (!conv.ok) {
      showDetailError(conv.status === 404 ? "This conversation no longer exists." : conv.error);
      return;
    }
    const [msgs, related] = await Promise.all([
      api("GET", path + "/messages?last=200"),
      api("GET", "/v1/conversations?limit=20&contact_id=" + encodeURIComponent(conv.data.contact_id)),
    ]);
    if (id !== view.selected) return;
    view.detail = {
      conversation: conv.data,
      messages: msgs.ok ? msgs.data.items : [],
      related: related.ok ? related.data.items.filter((c) => c.id !== id) : [],
    };
    showDetailError(null);
    drawDetail();
    TKPlaybook.showGuidance(id);
    if (withState) await loadState();
  }

  function showDetailError(text) {
    $("d-error").hidden = !text;
    $("d-error").textContent = text || "";
  }

  function drawDetail() {
    $("detail-empty").hidden = !!view.detail;
    $("detail-body").hidden = !view.detail;
    if (!view.detail) return;
    const c = view.detail.conversation;
    const allowed = c.allowed_statuses;
    $("d-contact").textContent = c.contact_id;
    $("d-status").textContent = c.status;
    $("d-status").dataset.status = c.status;
    $("d-stage").textContent = "stage " + (c.stage || "–");
    $("d-agent").hidden = !c.agent_id;
    $("d-agent").textContent = c.agent_id ? "with " + c.agent_id : "";
    $("d-id").textContent = c.id;
    $("take-over").disabled = allowed.indexOf("waiting_agent") < 0;
    $("hand-back").disabled = c.status !== "waiting_agent" || allowed.indexOf("active") < 0;
    $("close-conv").disabled = allowed.indexOf("closed") < 0;
    $("agent-input").disabled = c.status === "closed";
    $("agent-send").disabled = c.status === "closed";
    if (document.activeElement !== $("stage-input")) $("stage-input").value = c.stage || "";
    TK.renderTranscript($("d-transcript"), view.detail.messages, [], { user: "Contact" }, { agent: true });
    drawRelated();
    drawSummary();
  }

  function drawRelated() {
    const box = $("d-related");
    box.textContent = "";
    const others = view.detail.related;
    box.hidden = !others.length;
    if (!others.length) return;
    box.appendChild(TK.el("span", { className: "tk-small", text: "Also from this contact: " }));
    others.forEach((c) => {
      const link = TK.el("a", { href: "#c=" + encodeURIComponent(c.id), "data-testid": "related", text: TK.timeText(c.created_at) + " (" + c.status + ")" });
      link.addEventListener("click", (e) => { e.preventDefault(); select(c.id, true); });
      box.appendChild(link);
      box.appendChild(document.createTextNode(" "));
    });
  }

  function drawSummary() {
    const box = $("d-summary");
    box.textContent = "";
    const value = view.server && view.server.value;
    const rows = value && typeof value === "object" ? TKState.summary(view.schema, value) : [];
    box.hidden = !rows.length;
    rows.forEach((r) => box.appendChild(TK.el("div", { className: "tk-fact", "data-testid": "summary-" + r.key }, [
      TK.el("span", { className: "tk-small", text: r.title }),
      TK.el("strong", { dir: "auto", text: r.text }),
    ])));
  }

  /* Taking a conversation over records who took it: the name this browser keeps. */
  const AGENT_KEY = "threadkeep.agent";
  function agentName() {
    const name = $("agent-name").value.trim() || "agent";
    TK.storage.set(AGENT_KEY, name);
    return name;
  }

  async function setStatus(status) {
    const body = { status };
    if (status === "waiting_agent") body.agent_id = agentName();
    const res = await api("POST", conversationPath(view.selected) + "/status", body);
    showDetailError(res.ok ? null : res.error);
    await loadDetail(false);
  }

  async function agentReply(text) {
    const res = await api("POST", conversationPath(view.selected) + "/messages", { role: "agent", content: text },
      { "Idempotency-Key": TK.randomId("agent-") });
    showDetailError(res.ok ? null : res.error);
    TK.stick($("d-transcript"));
    await loadDetail(false);
  }

  async function setStage(stage) {
    const res = await api("PUT", conversationPath(view.selected) + "/stage", { stage: stage || null });
    showDetailError(res.ok ? null : res.error);
    await loadDetail(false);
  }

  /* ---------- the state editor ---------- */

  function say(text, isError) {
    $("s-msg").textContent = text;
    $("s-msg").className = isError ? "tk-error-text" : "tk-ok";
    clearTimeout(view.msgTimer);
    if (!isError && text) view.msgTimer = setTimeout(() => { $("s-msg").textContent = ""; }, 2500);
  }

  async function fetchState() {
    const path = conversationPath(view.selected) + "/state";
    const res = await api("GET", path);
    if (!res.ok) return { error: res.error };
    const value = res.data.value;
    return {
      value: value && typeof value === "object" && !Array.isArray(value) ? value : {},
      version: res.data.version,
      etag: res.etag,
      problems: res.data.problems || [],
    };
  }

  async function loadSchema() {
    const res = await api("GET", conversationPath(view.selected) + "/state/schema");
    view.schema = res.ok ? res.data : null;
  }

  function currentEdits() {
    return TKState.edits(view.editor.base, view.editor.inputs, view.editor.fields);
  }

  async function loadState() {
    const id = view.selected;
    const [s] = await Promise.all([fetchState(), view.schema === undefined ? loadSchema() : null]);
    if (id !== view.selected) return;
    if (s.error) { say(s.error, true); return; }
    view.server = s;
    let editing = false;
    try { editing = !!view.editor && currentEdits().length > 0; } catch (err) { editing = true; }  // half-typed
    if (!editing) {
      view.editor = { base: s.value, version: s.version, etag: s.etag, inputs: {}, fields: TKState.fields(view.schema, s.value) };
      drawState();
    } else if (s.version !== view.editor.version) {
      $("s-remote").hidden = false;
      $("s-remote").textContent = "Saved on another screen: version " + s.version +
        " (your edit is based on version " + view.editor.version + "). Saving now will show what changed.";
    }
    $("s-problems").hidden = !s.problems.length;
    $("s-problems").textContent = s.problems.length ? "The saved state does not fit the bot's schema: " +
      s.problems.map((p) => p.field + ": " + p.message).join("; ") : "";
    drawDetail();
  }

  function control(field, text) {
    let input;
    if (field.kind === "boolean" || field.kind === "enum") {
      const options = field.kind === "boolean" ? ["true", "false"] : field.options.map(String);
      input = TK.el("select", {}, [TK.el("option", { value: "", text: "(none)" })]
        .concat(options.map((o) => TK.el("option", { value: o, text: field.kind === "boolean" ? (o === "true" ? "yes" : "no") : o.replace(/_/g, " ") }))));
    } else {
      const type = { integer: "number", number: "number", date: "date" }[field.kind] || "text";
      input = TK.el("input", { type, inputmode: field.kind === "money" ? "numeric" : "text" });
      if (field.kind === "integer") input.step = "1";
      if (field.kind === "number") input.step = "any";
    }
    input.value = text;
    if (field.locked) input.disabled = true;
    return input;
  }

  function drawState() {
    const ed = view.editor;
    const body = $("s-fields");
    body.textContent = "";
    $("s-remote").hidden = true;
    $("s-version").textContent = ed.version ? "version " + ed.version : "nothing saved yet";
    $("s-version").dataset.version = String(ed.version);
    ed.fields.forEach((field) => {
      const original = ed.base[field.key];
      const text = field.key in ed.inputs ? ed.inputs[field.key] : TKState.toText(original, field.kind);
      const input = control(field, text);
      input.dataset.field = field.key;
      input.setAttribute("data-testid", "field-" + field.key);
      const mark = () => {
        ed.inputs[field.key] = input.value;
        let changed = true;
        try { changed = !TKState.same(TKState.parse(input.value, field), original); } catch (err) { changed = true; }
        input.classList.toggle("changed", changed);
      };
      input.addEventListener("input", mark);
      input.addEventListener("change", mark);
      if (field.key in ed.inputs) mark();
      const label = TK.el("td", { title: field.description || field.key, text: field.title + (field.locked ? " (bot)" : "") });
      body.appendChild(TK.el("tr", { className: field.locked ? "locked" : "" }, [label, TK.el("td", {}, [input])]));
    });
  }

  /* Save `value` expecting `etag`; on 412 show the conflict. */
  async function putState(value, etag) {
    const res = await api("PUT", conversationPath(view.selected) + "/state", { value }, { "If-Match": etag || '"0"' });
    if (res.status === 412) { await showConflict(); return; }
    if (!res.ok) { say(res.error, true); return; }
    $("conflict").hidden = true;
    view.editor = null;
    await loadState();
    say("Saved.", false);
  }

  async function saveState() {
    let changes;
    try { changes = currentEdits(); } catch (err) { say(err.message, true); return; }
    if (!changes.length) { say("Nothing changed.", false); return; }
    await putState(TKState.apply(view.editor.base, changes), view.editor.etag);
  }

  function cell(value) { return TKState.toText(value, typeof value === "string" ? "text" : "json") || "–"; }

  async function showConflict() {
    const id = view.selected;
    const server = await fetchState();
    if (id !== view.selected || server.error) return;
    view.server = server;
    const rows = $("conflict-rows");
    rows.textContent = "";
    TKState.conflict(view.editor.base, currentEdits(), server.value).forEach((r) => {
      rows.appendChild(TK.el("tr", { "data-field": r.key, className: r.clash ? "clash" : "" }, [
        TK.el("td", {}, [TK.el("strong", { text: r.key })]),
        TK.el("td", { text: cell(r.base) }),
        TK.el("td", { text: r.mine === undefined ? "(unchanged)" : cell(r.mine) }),
        TK.el("td", { "data-testid": "server-" + r.key, text: cell(r.server) }),
      ]));
    });
    $("conflict-text").textContent = "You edited version " + view.editor.version + "; the server is now at version " +
      server.version + ". Reload to take theirs, or re-apply your changed fields on top of version " + server.version + ".";
    $("conflict").hidden = false;
  }

  async function conflictReload() {
    $("conflict").hidden = true;
    view.editor = null;
    await loadState();
  }

  async function conflictReapply() {
    const server = await fetchState();
    if (server.error) return;
    await putState(TKState.apply(server.value, currentEdits()), server.etag);
  }

  function addField() {
    const key = $("new-key").value.trim();
    if (!key || !view.editor) return;
    view.editor.inputs[key] = $("new-value").value;
    if (!view.editor.fields.some((f) => f.key === key)) {
      view.editor.fields.push({ key, title: key, kind: "text", options: null, locked: false, nullable: true });
    }
    $("new-key").value = "";
    $("new-value").value = "";
    drawState();
  }

  /* ---------- live ---------- */

  const refreshList = TK.debounce(() => { loadList(); loadCounts(); }, 250);
  const refreshDetail = TK.debounce(() => loadDetail(false), 150);
  const refreshState = TK.debounce(() => loadState(), 150);

  function onEvent(event) {
    view.changed.add(event.conversation_id);
    refreshList();
    if (view.selected && event.conversation_id === view.selected) {
      if (event.kind === "conversation.deleted") {
        view.selected = null; view.detail = null; drawDetail(); TKPlaybook.showGuidance(null); return;
      }
      refreshDetail();
      if (event.kind === "state.saved") refreshState();
    }
  }

  const live = new TK.Live("", onEvent, (state) => TK.setIndicator($("live"), state), () => {
    refreshList();
    if (view.selected) loadDetail(true);
  });

  /* ---------- wiring ---------- */

  $("f-status").addEventListener("change", (e) => setFilter("status", e.target.value));
  $("f-stage").addEventListener("change", (e) => setFilter("stage", e.target.value));
  $("refresh").addEventListener("click", () => { loadList(); loadCounts(); });
  $("more").addEventListener("click", loadMore);
  $("agent-name").value = TK.storage.get(AGENT_KEY, "") || "";
  $("take-over").addEventListener("click", () => setStatus("waiting_agent"));
  $("hand-back").addEventListener("click", () => setStatus("active"));
  $("close-conv").addEventListener("click", () => {
    if (window.confirm("Close this conversation? The contact's next message starts a new one.")) setStatus("closed");
  });
  $("agent-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("agent-input").value.trim();
    if (!text) return;
    $("agent-input").value = "";
    agentReply(text);
  });
  $("stage-save").addEventListener("click", () => setStage($("stage-input").value.trim()));
  $("state-save").addEventListener("click", saveState);
  $("state-discard").addEventListener("click", conflictReload);
  $("conflict-reload").addEventListener("click", conflictReload);
  $("conflict-reapply").addEventListener("click", conflictReapply);
  $("add-field").addEventListener("click", addField);

  const hash = TK.keyFromPage();

  (async () => {
    live.start();
    await TKPlaybook.start({
      onSuggest: (text) => { $("agent-input").value = text; $("agent-input").focus(); },
      onMove: (stage) => setStage(stage),
    });
    await Promise.all([loadList(), loadCounts()]);
    if (hash.get("c")) select(hash.get("c"), false);
    document.body.dataset.ready = "1";
  })();
})();
