// Builder + raw JSON + live preview: as the definition changes, the count, a sample and the SQL (in the
// dialect picked) are fetched again, debounced; a newer edit drops the answer of an older one.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { post } from "./api.js";
import { Builder } from "./Builder.jsx";
import { DIALECTS, fieldErrors, hasConditions, newGroup, toDefinition, toEditor } from "./model.js";

export const DEBOUNCE_MS = 150;

function asOfParam(local) {
  return local ? `${local.length === 16 ? `${local}:00` : local}Z` : undefined;
}

export function Workbench({ initial, catalog, segments, readOnly, externalErrors, onChange, children,
  previewPath = "/api/segments/preview/" }) {
  const [tree, setTree] = useState(() => (initial ? toEditor(initial) : newGroup("AND")));
  const [tab, setTab] = useState("visual");
  const [rawText, setRawText] = useState("");
  const [rawError, setRawError] = useState("");
  const [dialect, setDialect] = useState("duckdb");
  const [asOf, setAsOf] = useState("");
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [pending, setPending] = useState(false);
  const seq = useRef(0);

  const definition = useMemo(() => {
    if (tab === "json") {
      try { return JSON.parse(rawText); } catch { return undefined; }
    }
    return toDefinition(tree);
  }, [tree, tab, rawText]);
  const key = JSON.stringify(definition);
  const ready = definition !== undefined && (tab === "json" || hasConditions(tree));

  useEffect(() => { onChange && onChange(ready ? definition : undefined); }, [key, ready]);

  useEffect(() => {
    if (!ready) { setResult(null); setError(null); setPending(false); return undefined; }
    const mine = ++seq.current;
    setPending(true);
    const timer = setTimeout(async () => {
      try {
        const body = await post(previewPath, { definition, limit: 10, dialect, as_of: asOfParam(asOf) });
        if (mine !== seq.current) return;
        setResult({ ...body, definition: key }); setError(null);
      } catch (err) {
        if (mine !== seq.current) return;
        setError(err); setResult(null);
      } finally {
        if (mine === seq.current) setPending(false);
      }
    }, DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [key, ready, dialect, asOf]);

  const errors = { ...fieldErrors(error && error.body), ...(externalErrors || {}) };

  const showJson = () => { setRawText(JSON.stringify(toDefinition(tree), null, 2)); setRawError(""); setTab("json"); };
  const showVisual = () => {
    try {
      setTree(toEditor(JSON.parse(rawText)));
      setTab("visual");
    } catch (err) {
      setRawError(`Not JSON: ${err.message}`);
    }
  };

  return (
    <div class="workbench">
      <div class="editor-pane">
        <div role="tablist" aria-label="Definition editor" class="tabs">
          <button type="button" role="tab" aria-selected={tab === "visual"} onClick={showVisual}>Visual</button>
          <button type="button" role="tab" aria-selected={tab === "json"} onClick={() => tab !== "json" && showJson()}>JSON</button>
        </div>
        {tab === "visual" ? (
          <Builder tree={tree} setTree={setTree} errors={errors} catalog={catalog} segments={segments}
            readOnly={readOnly} />
        ) : (
          <div class="raw-json">
            <label for="raw-json">Definition JSON</label>
            <textarea id="raw-json" rows="18" spellcheck={false} value={rawText} readOnly={readOnly}
              aria-invalid={rawError ? "true" : undefined}
              onInput={(e) => { setRawText(e.currentTarget.value); setRawError(""); }} />
            {definition === undefined && <span class="field-error" role="alert">{rawError || "not valid JSON yet"}</span>}
          </div>
        )}
        {children}
      </div>
      <aside class="preview-pane" aria-label="Preview">
        <h2>Preview</h2>
        <div class="preview-controls">
          <label for="as-of">as of (UTC)</label>
          <input id="as-of" type="datetime-local" value={asOf} onInput={(e) => setAsOf(e.currentTarget.value)} />
          {asOf && <button type="button" class="link" onClick={() => setAsOf("")}>now</button>}
        </div>
        <p class="count" aria-live="polite">
          {!ready ? "Add a condition to see who matches."
            : error ? <span class="error" role="alert">{error.message}</span>
            : result ? <><output id="preview-count" data-count={result.matched_users} data-definition={result.definition}>{result.matched_users.toLocaleString("en-US")}</output> users match</>
            : "Counting…"}
          {pending && ready && <span class="muted" aria-hidden="true"> · updating</span>}
        </p>
        {result && result.sample_user_ids.length > 0 && (
          <>
            <h3>Sample</h3>
            <ul class="sample">
              {result.sample_user_ids.map((u) => <li key={u}><a href={`#/profiles/${encodeURIComponent(u)}`}>{u}</a></li>)}
            </ul>
          </>
        )}
        <div class="sql-head">
          <h3>SQL</h3>
          <label for="dialect">dialect</label>
          <select id="dialect" value={dialect} onChange={(e) => setDialect(e.currentTarget.value)}>
            {DIALECTS.map((d) => <option key={d} value={d}>{d}</option>)}
          </select>
        </div>
        <pre class="sql" aria-label={`SQL (${dialect})`} tabindex="0">{result ? result.sql : ""}</pre>
      </aside>
    </div>
  );
}
