/* The chat bubble of /widget.js (served after tk.js, both inside one function).
 *
 * Any page includes it with <script src="https://host/widget.js"></script>, with no key: on a
 * service with THREADKEEP_PUBLIC_CHAT=true each visitor gets a token for its own conversation
 * only. The conversation lives in localStorage, so the visitor keeps one conversation across the
 * site's pages and tabs; /v1/events brings messages sent from another tab (or by an agent) in
 * live. The markup lives in a shadow root so the site's styles and the widget's do not mix.
 */
"use strict";

(() => {
  if (window.__threadkeepWidget) return;
  window.__threadkeepWidget = true;
  const script = document.currentScript;
  const base = script && script.src ? new URL(script.src, location.href).origin : "";
  const OPEN_KEY = "threadkeep.widget.open";

  /* The widget's own styles: a shadow root does not see style.css, so the message look of the
   * chat page is restated here, smaller (one file to include is worth the copy). */
  const CSS = [
    ":host { all: initial; font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; font-size: 14px; }",
    ".bubble { position: fixed; right: 18px; bottom: 18px; width: 56px; height: 56px; border-radius: 50%;",
    "  background: #2f6fed; color: #fff; border: 0; cursor: pointer; display: flex; align-items: center; justify-content: center; z-index: 2147483000;",
    "  box-shadow: 0 6px 18px rgba(0,0,0,.25); }",
    ".bubble .dot { position: absolute; top: 4px; right: 4px; width: 12px; height: 12px; border-radius: 50%; background: #e33; display: none; }",
    ".bubble.unread .dot { display: block; }",
    ".panel { position: fixed; right: 18px; bottom: 86px; width: 340px; max-width: calc(100vw - 24px);",
    "  height: 460px; max-height: calc(100vh - 110px); background: #fff; color: #1d2430; border-radius: 14px;",
    "  box-shadow: 0 10px 30px rgba(0,0,0,.25); display: flex; flex-direction: column; overflow: hidden; z-index: 2147483000; }",
    ".panel[hidden] { display: none; }",
    ".head { background: #183153; color: #fff; padding: 10px 12px; display: flex; align-items: center; gap: 8px; }",
    ".head .title { font-weight: 700; flex: 1; }",
    ".head button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.4); border-radius: 6px; cursor: pointer; font-size: 12px; padding: 3px 6px; }",
    ".live { width: 9px; height: 9px; border-radius: 50%; background: #999; display: inline-block; }",
    ".live[data-state=live] { background: #3c3; } .live[data-state=reconnecting] { background: #fb0; } .live[data-state=offline] { background: #e33; }",
    ".banner { background: #efe5ff; color: #4b1d99; padding: 6px 10px; font-size: 12px; }",
    ".banner[hidden], .error[hidden] { display: none; }",
    ".error { background: #ffe6e6; color: #8a1c1c; padding: 6px 10px; font-size: 12px; }",
    ".log { flex: 1; overflow-y: auto; padding: 8px 10px; background: #f5f6f8; }",
    ".tk-msg { max-width: 85%; margin: 5px 0; padding: 6px 10px; border-radius: 12px; background: #fff; border: 1px solid #dde1e7; }",
    ".tk-who { font-size: 10px; color: #6b7585; } .tk-text { white-space: pre-wrap; overflow-wrap: anywhere; }",
    ".tk-user { margin-left: auto; background: #e7efff; border-color: #cfdcfb; }",
    ".tk-agent { background: #f6f0ff; border-color: #d7c4fb; } .tk-pending { opacity: .6; }",
    ".tk-system, .tk-tool { margin: 5px auto; background: #eef0f3; }",
    ".hint { color: #6b7585; text-align: center; padding: 18px 8px; }",
    "form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #dde1e7; }",
    "input { flex: 1; min-width: 0; padding: 8px 10px; border: 1px solid #dde1e7; border-radius: 10px; font: inherit; }",
    "form button { background: #2f6fed; color: #fff; border: 0; border-radius: 10px; padding: 0 12px; font: inherit; cursor: pointer; }",
  ].join("\n");

  const ICON = '<svg width="26" height="26" viewBox="0 0 24 24" aria-hidden="true"><path fill="currentColor" ' +
    'd="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 ' +
    '1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z"/></svg>';

  const host = document.createElement("div");
  host.id = "threadkeep-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" + CSS + "</style>" +
    '<div class="panel" hidden part="panel">' +
    '  <div class="head"><span class="live" title="connection"></span><span class="title">Chat with us</span>' +
    '    <button type="button" class="new">New</button><button type="button" class="min" aria-label="Minimise">–</button></div>' +
    '  <div class="banner" hidden></div>' +
    '  <div class="log" aria-live="polite"></div>' +
    '  <div class="error" hidden></div>' +
    '  <form autocomplete="off"><input type="text" placeholder="Ask us anything…" aria-label="Message" maxlength="4000"><button type="submit">Send</button></form>' +
    "</div>" +
    '<button type="button" class="bubble" aria-label="Open chat">' + ICON + '<span class="dot"></span></button>';

  const q = (sel) => root.querySelector(sel);
  const panel = q(".panel");
  const bubble = q(".bubble");
  const input = q("input");
  let seen = 0;
  let live = null;
  let token = null;

  const isOpen = () => !panel.hidden;

  function setOpen(open) {
    panel.hidden = !open;
    TK.storage.set(OPEN_KEY, open);
    if (open) {
      bubble.classList.remove("unread");
      seen = session.messages.length;
      TK.stick(q(".log"));
      input.focus();
    }
  }

  function draw(s) {
    const conv = s.conversation || {};
    if (live && s.token !== token) live.restart();  // follow with the new visitor token
    token = s.token;
    TK.renderTranscript(q(".log"), s.messages, s.unsaved.concat(s.pending));
    if (!s.messages.length && !s.pending.length) {
      q(".log").appendChild(TK.el("div", { className: "hint", text: "Hi! Ask us anything: this chat follows you across the site." }));
    }
    q(".banner").hidden = conv.status !== "waiting_agent";
    q(".banner").textContent = "A person from our team is with you now.";
    q(".error").hidden = !s.error;
    q(".error").textContent = s.error || "";
    host.dataset.conversationId = s.conversationId || "";
    host.dataset.status = conv.status || "new";  // for tests and site styles; never shown
    host.dataset.stage = conv.stage || "";
    host.dataset.messages = String(s.messages.length);
    if (isOpen()) seen = s.messages.length;
    else if (s.messages.length > seen) bubble.classList.add("unread");
  }

  const session = new TK.ChatSession({ base, key: "threadkeep.widget", onChange: draw });
  live = new TK.Live(
    base,
    (event) => session.onEvent(event),
    (state) => { q(".live").dataset.state = state; host.dataset.live = state; },
    () => session.reload(),
    () => session.token,
  );

  bubble.addEventListener("click", () => setOpen(!isOpen()));
  q(".min").addEventListener("click", () => setOpen(false));
  q(".new").addEventListener("click", () => { session.newChat(); live.restart(); input.focus(); });
  q("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    session.send(text);
    TK.stick(q(".log"));
  });

  function mount() {
    document.body.appendChild(host);
    session.adopt().then(() => {
      live.start();
      seen = session.messages.length;
      if (TK.storage.get(OPEN_KEY) === true) setOpen(true);
    });
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
