/* The tenant's playbook on the dashboard: stage names and order for the filters and the stage
 * editor (GET /v1/playbooks/current), and the guidance panel beside the transcript
 * (GET /v1/conversations/{id}/guidance): suggested replies (a click puts one in the agent's
 * reply box), objections seen, open questions, transition criteria met and missing, a move to
 * the next stage (asking for confirmation while criteria are missing), and the contact's facts
 * with where each came from. The dashboard calls TKPlaybook.start() once and
 * TKPlaybook.showGuidance(id) whenever the open conversation may have changed. */
"use strict";

const TKPlaybook = (() => {
  const api = (method, path) => TK.api("", method, path);
  let book = null;           // the playbook, once loaded
  let hooks = { onSuggest: () => {}, onMove: () => {} };
  let shown = null;          // the conversation whose guidance is drawn
  let asking = null;         // the conversation whose guidance is being fetched
  let again = false;         // asked again while fetching: fetch once more after

  const $ = (id) => document.getElementById(id);

  async function start(options) {
    hooks = Object.assign(hooks, options);
    const res = await api("GET", "/v1/playbooks/current");
    if (!res.ok) return;
    book = res.data;
    const list = $("stage-options");
    if (list) {
      list.textContent = "";
      book.stages.forEach((s) => list.appendChild(TK.el("option", { value: s.id, text: s.name })));
    }
  }

  /* The playbook's stage ids in order, then the other ids of `seen` (e.g. from the counts). */
  function filterStages(seen) {
    const ids = book ? book.stages.map((s) => s.id) : [];
    return ids.concat(seen.filter((id) => ids.indexOf(id) < 0).sort());
  }

  /* The ids of `seen`, in playbook order, then the others sorted. */
  function order(seen) {
    return filterStages(seen).filter((id) => seen.indexOf(id) >= 0);
  }

  function label(id) {
    const stage = book && book.stages.find((s) => s.id === id);
    return stage && stage.name !== id ? stage.name : id;
  }

  function section(title, testid, children) {
    return TK.el("div", { className: "tk-g-section", "data-testid": testid }, [TK.el("h3", { text: title })].concat(children));
  }

  function value(v) {
    if (v === null || v === undefined) return "–";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  /* Where a fact came from, in words: "CRM ContactUpdate", "conversation · message 3", … */
  function source(fact) {
    const s = fact.source;
    if (!s) return "";
    const parts = [s.kind === "crm" ? "CRM " + (s.event || "") : String(s.kind || "")];
    if (s.message_seq) parts.push("message " + s.message_seq);
    return parts.filter(Boolean).join(" · ");
  }

  /* The move waiting for a confirmation ("conversation|stage"): a redraw (new messages, another
   * screen's change) keeps it open instead of dropping what the agent is answering. */
  let confirming = null;

  function moveBox(g) {
    const box = TK.el("div", { className: "tk-g-move" });
    const button = TK.el("button", { type: "button", "data-testid": "guidance-move", text: "Move to " + (g.next_stage_name || g.next_stage) });
    const key = shown + "|" + g.next_stage;
    box.appendChild(button);
    const ask = () => {
      confirming = key;
      button.hidden = true;
      const confirm = TK.el("div", { className: "tk-g-confirm", "data-testid": "guidance-confirm" }, [
        TK.el("div", { text: "Still missing before " + (g.next_stage_name || g.next_stage) + ":" }),
        TK.el("ul", {}, g.criteria_missing.map((c) => TK.el("li", { text: c.label }))),
      ]);
      const yes = TK.el("button", { type: "button", className: "primary", "data-testid": "guidance-move-anyway", text: "Move anyway" });
      const no = TK.el("button", { type: "button", "data-testid": "guidance-move-cancel", text: "Cancel" });
      yes.addEventListener("click", () => { confirming = null; hooks.onMove(g.next_stage); });
      no.addEventListener("click", () => { confirming = null; confirm.remove(); button.hidden = false; });
      confirm.appendChild(TK.el("div", { className: "tk-detail-actions" }, [yes, no]));
      box.appendChild(confirm);
    };
    button.addEventListener("click", () => {
      if (g.ready) { hooks.onMove(g.next_stage); return; }
      ask();
    });
    if (confirming === key && !g.ready) ask();
    return box;
  }

  function draw(g) {
    const panel = $("guidance");
    panel.textContent = "";
    panel.hidden = false;
    panel.appendChild(TK.el("h2", { "data-testid": "guidance-stage", text: g.stage_name }, [
      TK.el("span", { className: "tk-small", text: " · " + g.playbook + (g.known_stage ? "" : " (stage not in the playbook)") }),
    ]));
    panel.appendChild(section("Suggested replies", "guidance-suggestions", g.suggestions.map((s, i) => {
      const item = TK.el("button", { type: "button", className: "tk-g-suggestion", "data-testid": "suggestion-" + i, "data-kind": s.kind, text: s.text });
      item.addEventListener("click", () => hooks.onSuggest(s.text));
      return item;
    })));
    if (g.objections.length) {
      panel.appendChild(section("Objections", "guidance-objections", g.objections.map((o) => TK.el("div", { className: "tk-g-objection" }, [
        TK.el("strong", { text: o.id.replace(/_/g, " ") }),
        TK.el("div", { className: "tk-small", text: "“" + o.excerpt + "”" }),
        TK.el("div", { text: o.handling }),
      ]))));
    }
    if (g.unanswered.length) {
      panel.appendChild(section("Still to find out", "guidance-questions", [TK.el("ul", {}, g.unanswered.map((q) => TK.el("li", { text: q.ask })))]));
    }
    const criteria = g.criteria_met.map((c) => TK.el("li", { className: "met", "data-testid": "criterion-met", text: c.label }))
      .concat(g.criteria_missing.map((c) => TK.el("li", { className: "missing", "data-testid": "criterion-missing", text: c.label })));
    if (criteria.length || g.next_stage) {
      const children = [TK.el("ul", { className: "tk-g-criteria" }, criteria)];
      if (g.next_stage) children.push(moveBox(g));
      panel.appendChild(section(g.next_stage ? "Before " + (g.next_stage_name || g.next_stage) : "Criteria", "guidance-criteria", children));
    }
    if (g.critical_actions.length) {
      panel.appendChild(section("Don't forget", "guidance-actions", [TK.el("ul", {}, g.critical_actions.map((a) => TK.el("li", { text: a })))]));
    }
    if (g.facts.length) {
      panel.appendChild(section("What we know", "guidance-facts", [TK.el("table", { className: "tk-g-facts" }, g.facts.map((f) => TK.el("tr", { "data-testid": "fact-" + f.key }, [
        TK.el("td", { text: f.key }),
        TK.el("td", { dir: "auto", text: value(f.value) }),
        TK.el("td", { className: "tk-small", text: [f.tier, source(f), TK.timeText(f.updated_at)].filter(Boolean).join(" · ") }, [
          f.history.length ? TK.el("div", { "data-testid": "fact-was-" + f.key, text: "was " + value(f.history[0].value) + (source(f.history[0]) ? " (" + source(f.history[0]) + ")" : "") }) : null,
        ]),
      ])))]));
    }
  }

  /* Fetch and draw the guidance of conversation `id` (null hides the panel). */
  async function showGuidance(id) {
    const panel = $("guidance");
    if (!id) { shown = null; panel.hidden = true; return; }
    if (asking === id) { again = true; return; }
    asking = id;
    const res = await api("GET", "/v1/conversations/" + encodeURIComponent(id) + "/guidance");
    asking = null;
    if (res.ok) { shown = id; draw(res.data); } else if (shown !== id) { panel.hidden = true; }
    if (again) { again = false; showGuidance(id); }
  }

  return { start, order, filterStages, label, showGuidance };
})();
