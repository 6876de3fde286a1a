// The visual definition editor: nested groups and every condition type, each control labelled with its
// condition's number (1, 2.1, ...) so it can be found by ear and by keyboard; the API's errors appear under
// the field whose JSON path they name.
import {
  COMPARISON_OPERATORS, CONDITION_TYPES, FILTER_OPERATORS, LOGICS, METRICS, RECENCY_OPERATORS, SEGMENT_OPERATORS,
  WINDOWED, newCondition, newFilter, newGroup, newStep, operatorLabel, removeNode, reshapeValue, updateNode,
} from "./model.js";

const TYPE_LABELS = { frequency: "Frequency", monetary: "Monetary", recency: "Recency", first_seen: "First seen",
  trait: "Trait", sequence: "Sequence", segment: "Segment" };

function FieldError({ errors, path, id }) {
  const messages = errors[path];
  if (!messages) return null;
  return <span class="field-error" id={id} role="alert">{messages.join("; ")}</span>;
}

/** An input or select with its label, its error (by JSON path) announced with it. */
function Field({ label, path, errors, children, wide }) {
  const id = `f-${path.replace(/[^a-zA-Z0-9]/g, "-")}`;
  const errId = `${id}-error`;
  const invalid = Boolean(errors[path]);
  const control = children({ id, "aria-invalid": invalid ? "true" : undefined,
    "aria-describedby": invalid ? errId : undefined });
  return (
    <span class={`field${wide ? " wide" : ""}${invalid ? " invalid" : ""}`}>
      <label for={id}>{label}</label>
      {control}
      <FieldError errors={errors} path={path} id={errId} />
    </span>
  );
}

function Text({ label, aria, path, errors, value, onInput, list, readOnly, inputmode, placeholder }) {
  return (
    <Field label={label} path={path} errors={errors}>
      {(props) => (
        <input {...props} type="text" aria-label={aria} value={value ?? ""} list={list} readOnly={readOnly}
          inputmode={inputmode} placeholder={placeholder} autocomplete="off"
          onInput={(e) => onInput(e.currentTarget.value)} />
      )}
    </Field>
  );
}

function Select({ label, aria, path, errors, value, options, onChange, disabled, format = (o) => o }) {
  return (
    <Field label={label} path={path} errors={errors}>
      {(props) => (
        <select {...props} aria-label={aria} value={value} disabled={disabled}
          onChange={(e) => onChange(e.currentTarget.value)}>
          {!options.includes(value) && <option value={value}>{value || "—"}</option>}
          {options.map((o) => <option key={o} value={o}>{format(o)}</option>)}
        </select>
      )}
    </Field>
  );
}

function ValueEditor({ value, onChange, label, path, errors, readOnly, kindChoice }) {
  if (!value || value.shape === "none") return null;
  const set = (patch) => onChange({ ...value, ...patch });
  const numeric = value.kind === "number" ? "decimal" : undefined;
  const kind = kindChoice && value.shape !== "raw" && (
    <Select label="as" aria={`${label} value type`} path={`${path}#kind`} errors={errors} value={value.kind}
      options={["string", "number", "boolean"]} disabled={readOnly} onChange={(kind) => set({ kind })} />
  );
  if (value.shape === "raw") {
    return (
      <Text label="value (JSON)" aria={`${label} value`} path={path} errors={errors} readOnly={readOnly}
        value={value.text ?? JSON.stringify(value.json)}
        onInput={(text) => {
          try { onChange({ shape: "raw", json: JSON.parse(text), text }); } catch { onChange({ shape: "raw", json: text, text }); }
        }} />
    );
  }
  if (value.shape === "range") {
    return (
      <>
        <Text label="from" aria={`${label} value from`} path={`${path}[0]`} errors={errors} value={value.lo}
          inputmode={numeric} readOnly={readOnly} onInput={(lo) => set({ lo })} />
        <Text label="to" aria={`${label} value to`} path={`${path}[1]`} errors={errors} value={value.hi}
          inputmode={numeric} readOnly={readOnly} onInput={(hi) => set({ hi })} />
        <FieldError errors={errors} path={path} />
        {kind}
      </>
    );
  }
  if (value.shape === "list") {
    return (
      <>
        <Field label="values (one a line)" path={path} errors={errors} wide>
          {(props) => <textarea {...props} aria-label={`${label} values`} rows="3" readOnly={readOnly}
            value={value.text} onInput={(e) => set({ text: e.currentTarget.value })} />}
        </Field>
        {kind}
      </>
    );
  }
  if (value.kind === "boolean") {
    return (
      <>
        <Select label="value" aria={`${label} value`} path={path} errors={errors} value={value.text}
          options={["true", "false"]} disabled={readOnly} onChange={(text) => set({ text })} />
        {kind}
      </>
    );
  }
  return (
    <>
      <Text label="value" aria={`${label} value`} path={path} errors={errors} value={value.text}
        inputmode={numeric} readOnly={readOnly} onInput={(text) => set({ text })} />
      {kind}
    </>
  );
}

function kindIn(list, name) {
  const found = (list || []).find((p) => p.name === name);
  return found ? found.kind : undefined;
}

function Filters({ filters, onChange, label, path, errors, catalog, readOnly }) {
  const setAt = (i, filter) => onChange(filters.map((f, j) => (j === i ? filter : f)));
  return (
    <div class="filters">
      {filters.map((f, i) => {
        const at = `${path}[${i}]`;
        const fl = `${label} filter ${i + 1}`;
        return (
          <div class="filter" key={f.id} role="group" aria-label={fl}>
            <span class="where-label" aria-hidden="true">where</span>
            <Text label="property" aria={`${fl} property`} path={`${at}.property`} errors={errors} value={f.name}
              list="catalog-properties" readOnly={readOnly} onInput={(name) => {
                const kind = kindIn(catalog.properties, name);
                setAt(i, { ...f, name, value: kind ? reshapeValue(f.value, f.operator, kind) : f.value });
              }} />
            <Select label="operator" aria={`${fl} operator`} path={`${at}.operator`} errors={errors}
              value={f.operator} options={FILTER_OPERATORS} format={operatorLabel} disabled={readOnly}
              onChange={(operator) => setAt(i, { ...f, operator, value: reshapeValue(f.value, operator,
                kindIn(catalog.properties, f.name)) })} />
            <ValueEditor value={f.value} label={fl} path={`${at}.value`} errors={errors} readOnly={readOnly} kindChoice
              onChange={(value) => setAt(i, { ...f, value })} />
            <FieldError errors={errors} path={at} />
            {!readOnly && <button type="button" class="link" aria-label={`Remove ${fl}`}
              onClick={() => onChange(filters.filter((_, j) => j !== i))}>remove</button>}
          </div>
        );
      })}
      <FieldError errors={errors} path={path} />
      {!readOnly && <button type="button" class="small" aria-label={`Add a filter to ${label}`}
        onClick={() => onChange([...filters, newFilter()])}>+ where</button>}
    </div>
  );
}

function Window({ node, set, label, path, errors, readOnly }) {
  const mode = node.window_days !== undefined ? "days" : node.since !== undefined || node.until !== undefined
    ? "dates" : "all";
  const choose = (next) => {
    const { window_days, since, until, ...rest } = node;
    if (next === "days") set({ ...rest, window_days: "30" }, true);
    else if (next === "dates") set({ ...rest, since: "", until: "" }, true);
    else set(rest, true);
  };
  return (
    <>
      <Select label="window" aria={`${label} window`} path={`${path}#window`} errors={errors} value={mode}
        options={["all", "days", "dates"]} disabled={readOnly} onChange={choose}
        format={(m) => ({ all: "all history", days: "last N days", dates: "between dates" })[m]} />
      {node.window_days !== undefined && (
        <Text label="days" aria={`${label} window days`} path={`${path}.window_days`} errors={errors}
          value={node.window_days} inputmode="numeric" readOnly={readOnly} onInput={(window_days) => set({ window_days })} />
      )}
      {node.since !== undefined && (
        <Text label="since" aria={`${label} since`} path={`${path}.since`} errors={errors} value={node.since}
          placeholder="2026-01-31 or ISO 8601" readOnly={readOnly} onInput={(since) => set({ since })} />
      )}
      {node.until !== undefined && (
        <Text label="until" aria={`${label} until`} path={`${path}.until`} errors={errors} value={node.until}
          placeholder="empty: as of" readOnly={readOnly} onInput={(until) => set({ until })} />
      )}
    </>
  );
}

function ConditionFields({ node, set, label, path, errors, catalog, segments, readOnly }) {
  const t = node.type;
  const L = `Condition ${label}`;
  const text = (key, name, list, extra = {}) => (
    <Text label={name} aria={`${L} ${name}`} path={`${path}.${key}`} errors={errors} value={node[key]} list={list}
      readOnly={readOnly} onInput={(v) => set({ [key]: v })} {...extra} />
  );
  const operators = t === "recency" || t === "first_seen" ? RECENCY_OPERATORS : t === "trait" ? FILTER_OPERATORS
    : t === "segment" ? SEGMENT_OPERATORS : COMPARISON_OPERATORS;
  const valueKind = t === "trait" ? kindIn(catalog.traits, node.trait) : "number";
  const operator = node.operator !== undefined && (
    <Select label="operator" aria={`${L} operator`} path={`${path}.operator`} errors={errors} value={node.operator}
      options={operators} format={operatorLabel} disabled={readOnly}
      onChange={(op) => set(node.value !== undefined ? { operator: op, value: reshapeValue(node.value, op, valueKind) }
        : { operator: op })} />
  );
  return (
    <div class="fields">
      {t === "recency" && <span class="hint">{node.event_type === undefined ? "any event" : ""}</span>}
      {(t === "frequency" || t === "monetary" || t === "recency") && node.event_type !== undefined &&
        text("event_type", "event type", "catalog-events")}
      {t === "recency" && !readOnly && (
        <button type="button" class="small" aria-label={`${L}: ${node.event_type === undefined ? "one event type" : "any event type"}`}
          onClick={() => set({ event_type: node.event_type === undefined ? "" : undefined })}>
          {node.event_type === undefined ? "pick event type" : "any event"}</button>
      )}
      {t === "monetary" && (
        <Select label="metric" aria={`${L} metric`} path={`${path}.metric`} errors={errors} value={node.metric}
          options={METRICS} disabled={readOnly} onChange={(metric) => set({ metric })} />
      )}
      {t === "monetary" && text("property", "property", "catalog-properties")}
      {t === "trait" && (
        <Text label="trait" aria={`${L} trait`} path={`${path}.trait`} errors={errors} value={node.trait}
          list="catalog-traits" readOnly={readOnly} onInput={(trait) => {
            const kind = kindIn(catalog.traits, trait);
            set(kind ? { trait, value: reshapeValue(node.value, node.operator, kind) } : { trait });
          }} />
      )}
      {t === "segment" && (
        <Field label="segment" path={`${path}.segment_id`} errors={errors}>
          {(props) => (
            <select {...props} aria-label={`${L} segment`} value={node.segment_id} disabled={readOnly}
              onChange={(e) => set({ segment_id: e.currentTarget.value })}>
              {!segments.some((s) => String(s.id) === node.segment_id) &&
                <option value={node.segment_id}>#{node.segment_id}</option>}
              {segments.map((s) => <option key={s.id} value={String(s.id)}>#{s.id} {s.name}</option>)}
            </select>
          )}
        </Field>
      )}
      {operator}
      {node.value !== undefined && (
        <ValueEditor value={node.value} label={L} path={`${path}.value`} errors={errors} readOnly={readOnly}
          kindChoice={t === "trait"} onChange={(value) => set({ value })} />
      )}
      {(t === "recency" || t === "first_seen") && text("window_days", "days ago", undefined, { inputmode: "numeric" })}
      {t === "sequence" && text("within_days", "within days", undefined, { inputmode: "numeric" })}
      {WINDOWED.has(t) && <Window node={node} set={set} label={L} path={path} errors={errors} readOnly={readOnly} />}
      {t === "sequence" && (
        <ol class="steps">
          {node.steps.map((s, i) => {
            const sl = `${L} step ${i + 1}`;
            const at = `${path}.steps[${i}]`;
            const setStep = (step) => set({ steps: node.steps.map((x, j) => (j === i ? step : x)) });
            return (
              <li key={s.id} role="group" aria-label={sl}>
                <Text label="event type" aria={`${sl} event type`} path={`${at}.event_type`} errors={errors}
                  value={s.event_type} list="catalog-events" readOnly={readOnly}
                  onInput={(event_type) => setStep({ ...s, event_type })} />
                <Filters filters={s.where || []} label={sl} path={`${at}.where`} errors={errors} catalog={catalog}
                  readOnly={readOnly} onChange={(where) => setStep({ ...s, where })} />
                {!readOnly && node.steps.length > 2 && <button type="button" class="link" aria-label={`Remove ${sl}`}
                  onClick={() => set({ steps: node.steps.filter((_, j) => j !== i) })}>remove step</button>}
              </li>
            );
          })}
          <FieldError errors={errors} path={`${path}.steps`} />
          {!readOnly && node.steps.length < 5 && <button type="button" class="small" aria-label={`Add a step to ${L}`}
            onClick={() => set({ steps: [...node.steps, newStep()] })}>+ step</button>}
        </ol>
      )}
      {(t === "frequency" || t === "monetary" || t === "recency") && (
        <Filters filters={node.where || []} label={L} path={`${path}.where`} errors={errors} catalog={catalog}
          readOnly={readOnly} onChange={(where) => set({ where })} />
      )}
    </div>
  );
}

function NodeEditor({ node, root, setRoot, label, path, errors, catalog, segments, readOnly, onRemove }) {
  const update = (fn) => setRoot(updateNode(root, node.id, fn));
  const isRoot = node.id === root.id;
  if (node.kind === "raw") {
    return (
      <div class="node raw" role="group" aria-label={`Condition ${label} (JSON)`}>
        <p>Condition {label} is not one the visual editor shows; edit it in the JSON tab.</p>
        <pre>{JSON.stringify(node.json, null, 2)}</pre>
        <FieldError errors={errors} path={path} />
        {!readOnly && <button type="button" class="link" onClick={onRemove} aria-label={`Remove condition ${label}`}>remove</button>}
      </div>
    );
  }
  if (node.kind === "condition") {
    const set = (patch, replace) => update((n) => {
      const next = replace ? { ...patch } : { ...n, ...patch };
      for (const k of Object.keys(next)) if (next[k] === undefined) delete next[k];
      return next;
    });
    return (
      <fieldset class="node condition">
        <legend>Condition {label}: {TYPE_LABELS[node.type]}</legend>
        <ConditionFields node={node} set={set} label={label} path={path} errors={errors} catalog={catalog}
          segments={segments} readOnly={readOnly} />
        <FieldError errors={errors} path={path} />
        <FieldError errors={errors} path={`${path}.type`} />
        {!readOnly && <button type="button" class="link remove" onClick={onRemove}
          aria-label={`Remove condition ${label}`}>remove</button>}
      </fieldset>
    );
  }
  const name = isRoot ? "Definition" : `Group ${label}`;
  const prefix = isRoot ? "" : `${label}.`;
  return (
    <fieldset class={`node group${isRoot ? " root" : ""}`}>
      <legend>{name}</legend>
      <Select label="match" aria={`${name} logic`} path={`${path}.logic`} errors={errors} value={node.logic}
        options={LOGICS} disabled={readOnly} onChange={(logic) => update((n) => ({ ...n, logic }))}
        format={(l) => ({ AND: "all of (AND)", OR: "any of (OR)", NOT: "none of (NOT)" })[l]} />
      <FieldError errors={errors} path={path} />
      <FieldError errors={errors} path={`${path}.conditions`} />
      <div class="children">
        {node.children.map((child, i) => (
          <NodeEditor key={child.id} node={child} root={root} setRoot={setRoot} label={`${prefix}${i + 1}`}
            path={`${path}.conditions[${i}]`} errors={errors} catalog={catalog} segments={segments}
            readOnly={readOnly} onRemove={() => setRoot(removeNode(root, child.id))} />
        ))}
        {!node.children.length && <p class="muted">No condition yet.</p>}
      </div>
      {!readOnly && <AddNode name={name} onAdd={(child) => update((n) => ({ ...n, children: [...n.children, child] }))}
        catalog={catalog} />}
      {!readOnly && !isRoot && <button type="button" class="link remove" onClick={onRemove}
        aria-label={`Remove ${name}`}>remove group</button>}
    </fieldset>
  );
}

function AddNode({ name, onAdd, catalog }) {
  const id = `add-${name.replace(/\W/g, "-")}`;
  return (
    <div class="add-node">
      <label for={id}>New condition</label>
      <select id={id} aria-label={`${name}: new condition type`} defaultValue="frequency">
        {CONDITION_TYPES.map((t) => <option key={t} value={t}>{TYPE_LABELS[t]}</option>)}
      </select>
      <button type="button" aria-label={`${name}: add condition`} onClick={(e) => {
        const type = e.currentTarget.parentElement.querySelector("select").value;
        onAdd(newCondition(type, catalog));
      }}>Add condition</button>
      <button type="button" aria-label={`${name}: add group`} onClick={() => onAdd(newGroup("OR"))}>Add group</button>
    </div>
  );
}

export function Builder({ tree, setTree, errors, catalog, segments, readOnly }) {
  return (
    <div class="builder">
      <datalist id="catalog-events">
        {(catalog.event_types || []).map((e) => <option key={e.event_type} value={e.event_type}>{e.count} events</option>)}
      </datalist>
      <datalist id="catalog-properties">
        {(catalog.properties || []).map((p) => <option key={p.name} value={p.name}>{p.kind}</option>)}
      </datalist>
      <datalist id="catalog-traits">
        {(catalog.traits || []).map((p) => <option key={p.name} value={p.name}>{p.kind}</option>)}
      </datalist>
      <NodeEditor node={tree} root={tree} setRoot={setTree} label={tree.kind === "group" ? "" : "1"} path="definition"
        errors={errors} catalog={catalog} segments={segments} readOnly={readOnly}
        onRemove={() => setTree(newGroup("AND"))} />
      {tree.kind !== "group" && !readOnly && (
        <button type="button" onClick={() => setTree({ ...newGroup("AND"), children: [tree] })}>Wrap in a group</button>
      )}
    </div>
  );
}
