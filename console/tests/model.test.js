import { describe, expect, test } from "vitest";
import {
  CONDITION_TYPES, FILTER_OPERATORS, fieldErrors, hasConditions, newCondition, newFilter, newGroup, nodePaths,
  removeNode, reshapeValue, toDefinition, toEditor, updateNode,
} from "../src/model.js";

const roundTrip = (json) => toDefinition(toEditor(JSON.parse(JSON.stringify(json))));

// One filter per operator, with the value shape each takes (compiler/model.py).
const FILTERS = [
  { property: "total", operator: "eq", value: 500 },
  { property: "currency", operator: "neq", value: "EUR" },
  { property: "total", operator: "gt", value: 0.5 },
  { property: "items", operator: "gte", value: 2 },
  { property: "total", operator: "lt", value: -3 },
  { property: "paid_at", operator: "lte", value: "2026-03-14T22:00:00Z" },
  { property: "total", operator: "between", value: [10, 20] },
  { property: "currency", operator: "in", value: ["EUR", "USD"] },
  { property: "items", operator: "not_in", value: [1, 2, 3] },
  { property: "path", operator: "contains", value: "pricing" },
  { property: "path", operator: "starts_with", value: "/docs" },
  { property: "coupon", operator: "is_set" },
  { property: "coupon", operator: "is_not_set" },
  { property: "gift", operator: "eq", value: true },
  { property: "code", operator: "eq", value: "500" },
];

const EXAMPLES = {
  frequency: [
    { type: "frequency", event_type: "order_placed", operator: "gte", value: 3, window_days: 90 },
    { type: "frequency", event_type: "order_placed", operator: "between", value: [1, 5],
      since: "2026-01-01", until: "2026-02-01T12:00:00+02:00", where: FILTERS },
    { type: "frequency", event_type: "page_viewed", operator: "lt", value: 1, where: [] },
  ],
  monetary: [
    { type: "monetary", event_type: "order_placed", property: "total", metric: "sum", operator: "gte", value: 500 },
    ...["avg", "min", "max", "count"].map((metric) => ({ type: "monetary", event_type: "order_placed",
      property: "total", metric, operator: "between", value: [1.5, 99.25], window_days: 7,
      where: [{ property: "currency", operator: "eq", value: "EUR" }] })),
  ],
  recency: [
    { type: "recency", event_type: "page_viewed", operator: "gt", window_days: 30 },
    { type: "recency", operator: "lte", window_days: 1, where: [{ property: "path", operator: "is_set" }] },
  ],
  first_seen: ["gt", "gte", "lt", "lte"].map((operator) => ({ type: "first_seen", operator, window_days: 14 })),
  trait: FILTERS.map(({ property, ...rest }) => ({ type: "trait", trait: property, ...rest })),
  sequence: [
    { type: "sequence", steps: [{ event_type: "added_to_cart" }, { event_type: "order_placed" }], within_days: 1 },
    { type: "sequence", within_days: 30, window_days: 60, steps: [
      { event_type: "product_viewed", where: [{ property: "category", operator: "eq", value: "shoes" }] },
      { event_type: "added_to_cart", where: [] }, { event_type: "checkout_started" },
      { event_type: "order_placed", where: FILTERS.slice(0, 3) }, { event_type: "email_opened" }] },
    { type: "sequence", steps: [{ event_type: "a" }, { event_type: "b" }], within_days: 2, since: "2026-01-01" },
  ],
  segment: [{ type: "segment", segment_id: 7, operator: "in" }, { type: "segment", segment_id: 1, operator: "not_in" }],
};

describe("every condition type round-trips JSON -> editor -> JSON unchanged", () => {
  test("the examples cover every type", () => {
    expect(Object.keys(EXAMPLES).sort()).toEqual([...CONDITION_TYPES].sort());
    expect(new Set(FILTERS.map((f) => f.operator))).toEqual(new Set(FILTER_OPERATORS));
  });
  for (const [type, examples] of Object.entries(EXAMPLES)) {
    examples.forEach((example, i) => {
      test(`${type} #${i + 1}, alone and in a group`, () => {
        expect(roundTrip(example)).toEqual(example);
        const grouped = { logic: "OR", conditions: [example, { logic: "NOT", conditions: [example] }] };
        expect(roundTrip(grouped)).toEqual(grouped);
        expect(toEditor(example).kind).toBe("condition"); // shown field by field, not as raw JSON
      });
    });
  }
});

describe("the editor keeps what it cannot show", () => {
  test.each([
    ["the seed", { logic: "AND", conditions: [EXAMPLES.monetary[0], EXAMPLES.recency[0]] }],
    ["8 levels deep", [..."1234567"].reduce((inner) => ({ logic: "AND", conditions: [inner] }), EXAMPLES.segment[0])],
    ["an unknown key", { type: "frequency", event_type: "x", operator: "eq", value: 1, colour: "red" }],
    ["an unknown type", { type: "lookalike", seed: 3 }],
    ["a value of the wrong type", { type: "monetary", event_type: "o", property: "t", metric: "sum", operator: "gte",
      value: "abc" }],
    ["a between with one bound", { type: "trait", trait: "age", operator: "between", value: [3] }],
    ["an empty in-list", { type: "trait", trait: "age", operator: "in", value: [] }],
    ["mixed list values", { type: "trait", trait: "age", operator: "in", value: [1, "2"] }],
    ["a null value", { type: "trait", trait: "age", operator: "eq", value: null }],
    ["a string window", { type: "recency", operator: "gt", window_days: "30" }],
    ["a group with no conditions", { logic: "AND", conditions: [] }],
    ["not an object", [1, 2]],
    ["a window_days and a since", { type: "frequency", event_type: "x", operator: "eq", value: 1, window_days: 3,
      since: "2026-01-01" }],
  ])("%s", (_, json) => {
    expect(roundTrip(json)).toEqual(json);
  });
});

describe("editing", () => {
  test("typing a number into a number field sends a number; anything else is sent as typed", () => {
    let tree = newGroup("AND");
    const condition = newCondition("monetary", { event_types: [{ event_type: "order_placed", count: 5 }] });
    tree = updateNode(tree, tree.id, (g) => ({ ...g, children: [condition] }));
    tree = updateNode(tree, condition.id, (c) => ({ ...c, property: "total", value: { ...c.value, text: "500" } }));
    expect(toDefinition(tree)).toEqual({ logic: "AND", conditions: [{ type: "monetary", event_type: "order_placed",
      property: "total", metric: "sum", operator: "gte", value: 500 }] });
    tree = updateNode(tree, condition.id, (c) => ({ ...c, value: { ...c.value, text: "abc" } }));
    expect(toDefinition(tree).conditions[0].value).toBe("abc");
  });

  test("an operator change reshapes the value", () => {
    const scalar = { shape: "scalar", kind: "number", text: "4" };
    expect(reshapeValue(scalar, "between")).toEqual({ shape: "range", kind: "number", lo: "4", hi: "" });
    expect(reshapeValue(scalar, "in")).toEqual({ shape: "list", kind: "number", text: "4" });
    expect(reshapeValue(scalar, "is_set")).toEqual({ shape: "none" });
    expect(reshapeValue({ shape: "range", kind: "number", lo: "1", hi: "2" }, "eq")).toEqual(scalar && {
      shape: "scalar", kind: "number", text: "1" });
  });

  test("every new condition is a valid-looking editor node of its type", () => {
    for (const type of CONDITION_TYPES) {
      const node = newCondition(type);
      expect(node.kind).toBe("condition");
      expect(toDefinition(node).type).toBe(type);
    }
  });

  test("removing a node and the paths the API's errors use", () => {
    const a = newCondition("frequency");
    const inner = { ...newGroup("OR"), children: [newCondition("trait"), newCondition("recency")] };
    let tree = { ...newGroup("AND"), children: [a, inner] };
    const paths = nodePaths(tree);
    expect(paths[tree.id]).toBe("definition");
    expect(paths[inner.children[1].id]).toBe("definition.conditions[1].conditions[1]");
    tree = removeNode(tree, a.id);
    expect(nodePaths(tree)[inner.children[1].id]).toBe("definition.conditions[0].conditions[1]");
    expect(hasConditions(newGroup())).toBe(false);
    expect(hasConditions(tree)).toBe(true);
    expect(newFilter().value.shape).toBe("scalar");
  });

  test("field errors are the error body's keys other than detail and code", () => {
    expect(fieldErrors({ detail: "x", code: "invalid_value_type", "definition.value": ["expected a number"] }))
      .toEqual({ "definition.value": ["expected a number"] });
  });
});
