// The definition editor's model: a definition (the API's JSON, compiler/model.py) <-> an editor tree whose
// leaves are the texts the inputs show. toEditor(json) then toDefinition(tree) gives the same JSON back,
// including keys the editor does not know (kept in `extra`, so the API can still name them).

export const CONDITION_TYPES = ["frequency", "monetary", "recency", "first_seen", "trait", "sequence", "segment"];
export const LOGICS = ["AND", "OR", "NOT"];
export const COMPARISON_OPERATORS = ["eq", "neq", "gt", "gte", "lt", "lte", "between"];
export const RECENCY_OPERATORS = ["gt", "gte", "lt", "lte"];
export const FILTER_OPERATORS = ["eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains",
  "starts_with", "is_set", "is_not_set"];
export const METRICS = ["sum", "avg", "min", "max", "count"];
export const SEGMENT_OPERATORS = ["in", "not_in"];
export const WINDOWED = new Set(["frequency", "monetary", "sequence"]);
export const DIALECTS = ["duckdb", "postgres", "spark", "trino", "snowflake", "bigquery", "clickhouse"];

const OPERATOR_LABELS = {
  eq: "=", neq: "≠", gt: ">", gte: "≥", lt: "<", lte: "≤", between: "between", in: "in", not_in: "not in",
  contains: "contains", starts_with: "starts with", is_set: "is set", is_not_set: "is not set",
};
export const operatorLabel = (op) => OPERATOR_LABELS[op] || op;

let nextId = 1;
const newId = () => `n${nextId++}`;

// -- values ---------------------------------------------------------------------------------
// A value editor: {shape: "none"} (is_set), {shape: "scalar", kind, text}, {shape: "range", kind, lo, hi},
// {shape: "list", kind, text} (one item a line), or {shape: "raw", json} for anything else.
const kindOf = (v) => (typeof v === "number" ? "number" : typeof v === "boolean" ? "boolean" : "string");

function scalarText(v) {
  return typeof v === "string" ? v : String(v);
}

export function valueToEditor(value, present, operator) {
  if (!present) return { shape: "none" };
  if (Array.isArray(value)) {
    const kinds = new Set(value.map((v) => typeof v));
    const plain = value.every((v) => ["number", "string", "boolean"].includes(typeof v)) && kinds.size <= 1;
    if (plain && value.every((v) => typeof v !== "string" || !v.includes("\n"))) {
      const kind = value.length ? kindOf(value[0]) : "string";
      if (operator === "between" && value.length === 2) {
        return { shape: "range", kind, lo: scalarText(value[0]), hi: scalarText(value[1]) };
      }
      if (operator !== "between" && value.length > 0) return { shape: "list", kind, text: value.map(scalarText).join("\n") };
    }
    return { shape: "raw", json: value };
  }
  if (value === null || typeof value === "object") return { shape: "raw", json: value };
  return { shape: "scalar", kind: kindOf(value), text: scalarText(value) };
}

function parseScalar(kind, text) {
  if (kind === "number") {
    const trimmed = text.trim();
    const n = Number(trimmed);
    return trimmed !== "" && Number.isFinite(n) ? n : text; // a non-number stays text: the API names the field
  }
  if (kind === "boolean") return text === "true" ? true : text === "false" ? false : text;
  return text;
}

export function valueFromEditor(v) {
  switch (v.shape) {
    case "none": return undefined;
    case "scalar": return parseScalar(v.kind, v.text);
    case "range": return [parseScalar(v.kind, v.lo), parseScalar(v.kind, v.hi)];
    case "list": return v.text.split("\n").map((t) => parseScalar(v.kind, t));
    default: return v.json;
  }
}

/** The value editor an operator needs, keeping what can be kept of the current one. */
export function reshapeValue(v, operator, kind) {
  kind = kind || (v && v.kind) || "string";
  const first = v && v.shape === "scalar" ? v.text : v && v.shape === "range" ? v.lo : "";
  if (operator === "is_set" || operator === "is_not_set") return { shape: "none" };
  if (operator === "between") return { shape: "range", kind, lo: first, hi: v && v.shape === "range" ? v.hi : "" };
  if (operator === "in" || operator === "not_in") {
    return { shape: "list", kind, text: v && v.shape === "list" ? v.text : first };
  }
  return { shape: "scalar", kind, text: first };
}

// -- conditions -----------------------------------------------------------------------------
const KNOWN = {
  frequency: ["type", "event_type", "operator", "value", "window_days", "since", "until", "where"],
  monetary: ["type", "event_type", "property", "metric", "operator", "value", "window_days", "since", "until", "where"],
  recency: ["type", "event_type", "operator", "window_days", "where"],
  first_seen: ["type", "operator", "window_days"],
  trait: ["type", "trait", "operator", "value"],
  sequence: ["type", "steps", "within_days", "window_days", "since", "until"],
  segment: ["type", "segment_id", "operator"],
};
const GROUP_KEYS = ["logic", "conditions"];

function extraOf(obj, known) {
  const extra = {};
  for (const key of Object.keys(obj)) if (!known.includes(key)) extra[key] = obj[key];
  return extra;
}

const text = (v) => (v === undefined ? "" : v === null ? "" : String(v));
const isText = (v) => v === undefined || typeof v === "string";
const isInt = (v) => v === undefined || (typeof v === "number" && Number.isInteger(v));

function filtersToEditor(where, nameKey) {
  return where.map((f) => ({
    id: newId(), name: text(f[nameKey]), operator: text(f.operator),
    value: valueToEditor(f.value, "value" in f, f.operator), extra: extraOf(f, [nameKey, "operator", "value"]),
  }));
}

function filtersFromEditor(filters, nameKey) {
  return filters.map((f) => withValue({ [nameKey]: f.name, operator: f.operator, ...f.extra }, f.value));
}

function withValue(obj, value) {
  const out = { ...obj };
  const json = valueFromEditor(value);
  if (json !== undefined) out.value = json;
  return out;
}

/** Whether the editor can show ``obj`` field by field (otherwise it is kept as raw JSON). */
function representable(obj) {
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return false;
  if ("logic" in obj) return typeof obj.logic === "string" && Array.isArray(obj.conditions);
  const fields = KNOWN[obj.type];
  if (!fields) return false;
  const where = obj.where === undefined || (Array.isArray(obj.where) && obj.where.every(
    (f) => f && typeof f === "object" && !Array.isArray(f) && isText(f.property) && isText(f.operator)));
  const steps = obj.steps === undefined || (Array.isArray(obj.steps) && obj.steps.every(
    (s) => s && typeof s === "object" && !Array.isArray(s) && isText(s.event_type) &&
      (s.where === undefined || representable({ type: "recency", where: s.where }))));
  return where && steps && ["event_type", "property", "metric", "operator", "trait", "since", "until"].every(
    (k) => isText(obj[k])) && ["window_days", "within_days", "segment_id"].every((k) => isInt(obj[k]));
}

export function toEditor(obj) {
  if (!representable(obj)) return { id: newId(), kind: "raw", json: obj };
  if ("logic" in obj) {
    return { id: newId(), kind: "group", logic: obj.logic, children: obj.conditions.map(toEditor),
      extra: extraOf(obj, GROUP_KEYS) };
  }
  const c = { id: newId(), kind: "condition", type: obj.type, extra: extraOf(obj, KNOWN[obj.type]) };
  for (const key of ["event_type", "property", "metric", "operator", "trait", "since", "until"]) {
    if (key in obj) c[key] = obj[key];
  }
  for (const key of ["window_days", "within_days", "segment_id"]) if (key in obj) c[key] = String(obj[key]);
  if (KNOWN[obj.type].includes("value")) c.value = valueToEditor(obj.value, "value" in obj, obj.operator);
  if (Array.isArray(obj.where)) c.where = filtersToEditor(obj.where, "property");
  if (Array.isArray(obj.steps)) {
    c.steps = obj.steps.map((s) => ({ id: newId(), event_type: s.event_type,
      where: s.where === undefined ? undefined : filtersToEditor(s.where, "property"),
      extra: extraOf(s, ["event_type", "where"]) }));
  }
  return c;
}

const intOrText = (t) => (/^-?\d+$/.test(t.trim()) ? Number(t.trim()) : t);

export function toDefinition(node) {
  if (node.kind === "raw") return node.json;
  if (node.kind === "group") return { logic: node.logic, conditions: node.children.map(toDefinition), ...node.extra };
  const out = { type: node.type };
  for (const key of ["event_type", "property", "metric", "operator", "trait"]) {
    if (node[key] !== undefined) out[key] = node[key];
  }
  if (node.segment_id !== undefined) out.segment_id = intOrText(node.segment_id);
  if (node.value !== undefined && node.value.shape !== "none") out.value = valueFromEditor(node.value);
  for (const key of ["window_days", "within_days"]) if (node[key] !== undefined) out[key] = intOrText(node[key]);
  for (const key of ["since", "until"]) if (node[key] !== undefined) out[key] = node[key];
  if (node.where !== undefined) out.where = filtersFromEditor(node.where, "property");
  if (node.steps !== undefined) {
    out.steps = node.steps.map((s) => {
      const step = { event_type: s.event_type, ...s.extra };
      if (s.where !== undefined) step.where = filtersFromEditor(s.where, "property");
      return step;
    });
  }
  return { ...out, ...node.extra };
}

// -- new nodes ------------------------------------------------------------------------------
export function newCondition(type, catalog = {}) {
  const event = (catalog.event_types && catalog.event_types[0] && catalog.event_types[0].event_type) || "";
  const defaults = {
    frequency: { type, event_type: event, operator: "gte", value: 1, window_days: 30 },
    monetary: { type, event_type: event, property: "", metric: "sum", operator: "gte", value: 0 },
    recency: { type, event_type: event, operator: "gt", window_days: 30 },
    first_seen: { type, operator: "lt", window_days: 30 },
    trait: { type, trait: "", operator: "eq", value: "" },
    sequence: { type, steps: [{ event_type: event }, { event_type: event }], within_days: 7 },
    segment: { type, segment_id: 1, operator: "in" },
  };
  return toEditor(defaults[type]);
}

export function newGroup(logic = "AND") {
  return { id: newId(), kind: "group", logic, children: [], extra: {} };
}

export function newFilter() {
  return { id: newId(), name: "", operator: "eq", value: { shape: "scalar", kind: "string", text: "" }, extra: {} };
}

export function newStep(event = "") {
  return { id: newId(), event_type: event, where: undefined, extra: {} };
}

// -- tree edits (immutable) -----------------------------------------------------------------
export function updateNode(root, id, fn) {
  if (root.id === id) return fn(root);
  if (root.kind !== "group") return root;
  const children = root.children.map((c) => updateNode(c, id, fn));
  return children.some((c, i) => c !== root.children[i]) ? { ...root, children } : root;
}

export function removeNode(root, id) {
  if (root.kind !== "group") return root;
  const children = root.children.filter((c) => c.id !== id).map((c) => removeNode(c, id));
  return { ...root, children };
}

/** Whether the tree has at least one condition (an empty group is not worth previewing). */
export function hasConditions(node) {
  return node.kind !== "group" || node.children.some(hasConditions);
}

/** The JSON path of every node, as the API's errors name them (``definition.conditions[1].where[0].value``). */
export function nodePaths(root, base = "definition") {
  const paths = { [root.id]: base };
  if (root.kind === "group") {
    root.children.forEach((c, i) => Object.assign(paths, nodePaths(c, `${base}.conditions[${i}]`)));
  }
  return paths;
}

/** The API's field errors (an error body's keys other than detail and code) under the paths they name. */
export function fieldErrors(body) {
  const out = {};
  if (!body || typeof body !== "object") return out;
  for (const [key, value] of Object.entries(body)) {
    if (key !== "detail" && key !== "code" && Array.isArray(value)) out[key] = value;
  }
  return out;
}
