/* The web chat at "/": one visitor conversation kept in the browser, live over /v1/events.
 * A visitor sees people's words only: no internal labels (status names, stages, ids). They are
 * kept as data attributes of <body> for tests and styling. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const transcript = $("transcript");
  const input = $("input");

  const BANNERS = {
    waiting_agent: "A person from our team has joined; they will answer you here.",
    closed: "This conversation is closed. Your next message starts a new one.",
  };

  let live = null;
  let token = null;

  function draw(session) {
    const conv = session.conversation || {};
    if (live && session.token !== token) live.restart();  // follow with the new visitor token
    token = session.token;
    TK.renderTranscript(transcript, session.messages, session.unsaved.concat(session.pending));
    $("empty").hidden = session.messages.length + session.pending.length > 0;
    Object.assign(document.body.dataset, {
      status: conv.status || "new",
      stage: conv.stage || "",
      conversationId: session.conversationId || "",
    });
    const banner = BANNERS[conv.status];
    $("banner").hidden = !banner;
    $("banner").textContent = banner || "";
    $("error").hidden = !session.error;
    $("error").textContent = session.error || "";
    document.body.dataset.ready = "1";
  }

  TK.keyFromPage();
  const session = new TK.ChatSession({ key: "threadkeep.chat", onChange: draw });
  live = new TK.Live(
    "",
    (event) => session.onEvent(event),
    (state) => TK.setIndicator($("live"), state),
    () => session.reload(),
    () => session.token,
  );

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    const sent = session.send(text);
    TK.stick(transcript);  // one's own message is always shown
    sent.then(() => input.focus());
  });
  $("new-chat").addEventListener("click", () => {
    session.newChat();
    live.restart();
    input.focus();
  });

  session.adopt().then(() => live.start());
})();
