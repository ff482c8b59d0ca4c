/* The dashboard's state editor, as pure functions (no DOM, no network): which control each
 * field gets (from the bot's JSON Schema, or from the value when the state is free-form), text
 * <-> value, what an agent changed, what clashed with a newer version, and the lead summary.
 * Loaded by dashboard.html; tests/web/test_stateedit.py runs it in Chromium. */
"use strict";

const TKState = (() => {
  /* Deep equality that ignores the order of object keys. */
  function same(a, b) {
    if (a === b) return true;
    if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && same(a[k], b[k]));
  }

  /* The schema of one property without its "or null" alternative. */
  function plain(prop) {
    const options = (prop && prop.anyOf) || null;
    if (!options) return prop || {};
    const real = options.filter((p) => p.type !== "null");
    return real.length === 1 ? Object.assign({}, prop, real[0], { anyOf: undefined }) : prop;
  }

  /* The control a property gets: integer, number, money, boolean, enum, date, datetime, text,
   * or json (lists, objects, anything else). */
  function kindOf(prop, value) {
    const p = plain(prop);
    if (p.enum) return "enum";
    if (p.format === "money") return "money";
    if (p.type === "integer") return "integer";
    if (p.type === "number") return "number";
    if (p.type === "boolean") return "boolean";
    if (p.type === "string" && p.format === "date") return "date";
    if (p.type === "string" && p.format === "date-time") return "datetime";
    if (p.type === "string") return "text";
    if (prop === undefined || prop === null) {
      if (typeof value === "number") return "number";
      if (typeof value === "boolean") return "boolean";
      if (typeof value === "string" || value === null || value === undefined) return "text";
    }
    return "json";
  }

  /* The fields to show for `value`: the schema's properties in order, then keys it does not
   * know (a person's own fields). */
  function fields(schema, value) {
    const props = (schema && schema.properties) || {};
    const keys = Object.keys(props).concat(Object.keys(value || {}).filter((k) => !(k in props)));
    return keys.map((key) => {
      const prop = props[key];
      const p = plain(prop);
      return {
        key,
        title: p.title || key,
        kind: kindOf(prop, value ? value[key] : undefined),
        options: p.enum || null,
        locked: !!p.readOnly,
        nullable: !prop || !!(prop.anyOf && prop.anyOf.some((o) => o.type === "null")),
        description: p.description || "",
      };
    });
  }

  function toText(value, kind) {
    if (value === null || value === undefined) return "";
    if (kind === "json" || typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  /* The value of a control's text; throws Error naming what is wrong. */
  function parse(text, field) {
    const t = String(text).trim();
    if (t === "") {
      if (field.nullable) return null;
      throw new Error(field.title + " cannot be empty");
    }
    switch (field.kind) {
      case "integer":
      case "money": {
        const n = Number(t.replace(/[$,\s]/g, ""));
        if (!Number.isInteger(n)) throw new Error(field.title + " must be a whole number (like 450000), not " + JSON.stringify(t));
        return n;
      }
      case "number": {
        const n = Number(t);
        if (!Number.isFinite(n)) throw new Error(field.title + " must be a number, not " + JSON.stringify(t));
        return n;
      }
      case "boolean":
        if (t === "true" || t === "false") return t === "true";
        throw new Error(field.title + " must be yes or no");
      case "enum":
        if (field.options.map(String).indexOf(t) < 0) throw new Error(field.title + " must be one of " + field.options.join(", "));
        return field.options[field.options.map(String).indexOf(t)];
      case "json":
        try { return JSON.parse(t); } catch (err) { throw new Error(field.title + " must be JSON (like [\"roof\"]), not " + JSON.stringify(t)); }
      default:
        return t;
    }
  }

  /* [[key, value]] of the inputs that differ from `base` (inputs: {key: text}). Throws the
   * first field's error. */
  function edits(base, inputs, fieldList) {
    const byKey = {};
    fieldList.forEach((f) => { byKey[f.key] = f; });
    const out = [];
    Object.keys(inputs).forEach((key) => {
      const field = byKey[key] || { key, title: key, kind: "text", nullable: true };
      const value = parse(inputs[key], field);
      if (!(key in base) || !same(value, base[key])) out.push([key, value]);
    });
    return out;
  }

  function apply(value, changes) {
    const out = Object.assign({}, value);
    changes.forEach(([key, v]) => { out[key] = v; });
    return out;
  }

  /* Rows of a conflict: each field an agent changed or another screen changed meanwhile. */
  function conflict(base, changes, server) {
    const mine = {};
    changes.forEach(([key, v]) => { mine[key] = v; });
    const keys = Object.keys(Object.assign({}, base, server, mine));
    return keys.filter((k) => k in mine || !same(base[k], server[k])).map((k) => ({
      key: k,
      base: base[k],
      mine: k in mine ? mine[k] : undefined,
      server: server[k],
      clash: k in mine && !same(base[k], server[k]) && !same(mine[k], server[k]),
    }));
  }

  /* What an agent reads at a glance: [{key, title, text}] of the set, unlocked fields. */
  function summary(schema, value) {
    return fields(schema, value)
      .filter((f) => !f.locked && value && value[f.key] !== null && value[f.key] !== undefined && !same(value[f.key], []))
      .map((f) => ({ key: f.key, title: f.title, text: display(value[f.key], f) }));
  }

  function display(value, field) {
    if (field.kind === "money" && typeof value === "number") return "$" + value.toLocaleString("en-US");
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value).replace(/_/g, " ");
  }

  return { same, fields, kindOf, toText, parse, edits, apply, conflict, summary, display };
})();

if (typeof module !== "undefined") module.exports = TKState;
