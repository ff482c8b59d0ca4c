/* The web chat at "/": one conversation kept in localStorage, live over /v1/events. */
"use strict";

(function () {
  var $ = function (id) { return document.getElementById(id); };
  var transcript = $("transcript");
  var input = $("input");

  var BANNERS = {
    waiting_agent: "A person from our team has joined; the bot is paused until they hand back.",
    closed: "This conversation is closed. Your next message starts a new one.",
  };

  function draw(session) {
    var conv = session.conversation || {};
    TK.renderTranscript(transcript, session.messages, session.unsaved.concat(session.pending));
    $("empty").hidden = session.messages.length + session.pending.length > 0;
    $("status").textContent = conv.status || "new";
    $("status").dataset.status = conv.status || "new";
    $("stage").textContent = conv.stage || "–";
    $("conv-id").textContent = session.conversationId || "none yet";
    var banner = BANNERS[conv.status];
    $("banner").hidden = !banner;
    $("banner").textContent = banner || "";
    $("error").hidden = !session.error;
    $("error").textContent = session.error || "";
    $("send").disabled = session.sending;
    document.body.dataset.ready = "1";
  }

  TK.keyFromPage();
  var session = new TK.ChatSession({ key: "threadkeep.chat", onChange: draw });
  var live = new TK.Live(
    "",
    function (event) { session.onEvent(event); },
    function (state) { TK.setIndicator($("live"), state); },
    function () { session.reload(); }
  );

  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value;
    if (!text.trim() || session.sending) return;
    input.value = "";
    session.send(text).then(function () { input.focus(); });
  });
  $("new-chat").addEventListener("click", function () {
    session.newChat();
    input.focus();
  });

  live.start();
  session.adopt();
})();
