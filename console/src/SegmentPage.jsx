import { useEffect, useState } from "preact/hooks";
import { download, get, patch, post, qs } from "./api.js";
import { SizeChart } from "./charts.jsx";
import { diffLines } from "./diff.js";
import { fieldErrors } from "./model.js";
import { useSegments } from "./Segments.jsx";
import { Workbench } from "./Workbench.jsx";

const FINISHED = new Set(["done", "failed"]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function Definition({ segment, catalog, can, onSaved }) {
  const segments = useSegments().filter((s) => s.id !== segment.id);
  const [definition, setDefinition] = useState(undefined);
  const [saveError, setSaveError] = useState(null);
  const [saved, setSaved] = useState("");
  const writable = can("segments:write");
  const save = async () => {
    setSaveError(null); setSaved("");
    try {
      const updated = await patch(`/api/segments/${segment.id}/`, { definition });
      setSaved(updated.version === segment.version ? "No change: the definition is the same."
        : `Saved as version ${updated.version}.`);
      onSaved(updated);
    } catch (err) {
      setSaveError(err);
    }
  };
  const unchanged = JSON.stringify(definition) === JSON.stringify(segment.definition);
  return (
    <Workbench initial={segment.definition} catalog={catalog} segments={segments} readOnly={!writable}
      onChange={setDefinition} externalErrors={saveError ? fieldErrors(saveError.body) : {}}>
      {writable && (
        <div class="actions">
          <button type="button" onClick={save} disabled={definition === undefined || unchanged}>Save definition</button>
          <span role="status">{saved}</span>
          {saveError && <span class="error" role="alert">{saveError.message}</span>}
        </div>
      )}
    </Workbench>
  );
}

function Compute({ segment, onJob, can }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState("");
  if (!can("segments:write")) return null;
  const run = async () => {
    setError("");
    try {
      const queued = await post(`/api/segments/${segment.id}/compute/`);
      let current = { job_id: queued.job_id, status: queued.status };
      setJob(current);
      while (!FINISHED.has(current.status)) {
        await sleep(400);
        current = await get(`/api/segments/jobs/${queued.job_id}/`);
        setJob(current);
      }
      onJob(current);
    } catch (err) {
      setError(err.message);
    }
  };
  const busy = job && !FINISHED.has(job.status);
  return (
    <div class="compute">
      <button type="button" onClick={run} disabled={busy}>Compute now</button>
      <span role="status" aria-live="polite" class="job-status">
        {job && `Job ${job.job_id}: ${job.status}${job.status === "done" ? ` · ${job.member_count} members (+${job.entered_count} −${job.exited_count}) in ${job.duration_seconds} s` : ""}${job.error ? ` · ${job.error}` : ""}`}
      </span>
      {error && <span class="error" role="alert">{error}</span>}
    </div>
  );
}

function Members({ segment, can }) {
  const [pages, setPages] = useState([]);
  const [cursor, setCursor] = useState(undefined);
  const [error, setError] = useState("");
  const [check, setCheck] = useState("");
  const [checked, setChecked] = useState(null);
  const load = async (at) => {
    try {
      const body = await get(`/api/segments/${segment.id}/members/${qs({ limit: 50, cursor: at })}`);
      setPages((p) => [...(at ? p : []), body]);
      setCursor(body.next_cursor);
      setError("");
    } catch (err) {
      setError(err.message);
    }
  };
  useEffect(() => { load(undefined); }, [segment.id, segment.last_computed_at]);
  const lookup = async (e) => {
    e.preventDefault();
    try {
      const body = await get(`/api/segments/membership/${qs({ user_id: check })}`);
      setChecked({ user: check, member: body.segment_ids.includes(segment.id) });
    } catch (err) {
      setChecked({ user: check, error: err.message });
    }
  };
  const rows = pages.flatMap((p) => p.results);
  return (
    <div>
      {can("membership:read") && (
        <form class="inline" onSubmit={lookup} aria-label="Find a member">
          <label for="member-search">User id</label>
          <input id="member-search" value={check} onInput={(e) => setCheck(e.currentTarget.value)} required />
          <button type="submit">Is a member?</button>
          <span role="status">{checked && (checked.error ? checked.error : <>
            <a href={`#/profiles/${encodeURIComponent(checked.user)}`}>{checked.user}</a>
            {checked.member ? " is a member" : " is not a member"}</>)}</span>
        </form>
      )}
      {error ? <p class="muted">{error}</p> : (
        <>
          <p>{pages.length ? `${pages[0].count.toLocaleString("en-US")} members` : "Loading…"}</p>
          <ul class="members" aria-label="Members">
            {rows.map((m) => <li key={m.user_id}><a href={`#/profiles/${encodeURIComponent(m.user_id)}`}>{m.user_id}</a></li>)}
          </ul>
          {cursor && <button type="button" onClick={() => load(cursor)}>More members</button>}
        </>
      )}
    </div>
  );
}

function Export({ segment, can }) {
  const [format, setFormat] = useState("parquet");
  const [state, setState] = useState("");
  if (!can("exports:read")) return null;
  const run = async () => {
    setState("Exporting…");
    try {
      let exp = await post(`/api/segments/${segment.id}/export/?wait=30`, { format });
      while (!FINISHED.has(exp.status)) {
        await sleep(500);
        exp = await get(`/api/segments/${segment.id}/export/${qs({ export_id: exp.export_id })}`);
      }
      if (exp.status !== "done") { setState(`Export failed: ${exp.error}`); return; }
      await download(`/api/segments/exports/${exp.export_id}/download/`, `segment-${segment.id}.${format}`);
      setState(`Downloaded ${exp.row_count} rows as ${format}.`);
    } catch (err) {
      setState(err.message);
    }
  };
  return (
    <div class="export inline">
      <label for="export-format">Format</label>
      <select id="export-format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
        {["parquet", "csv", "jsonl"].map((f) => <option key={f} value={f}>{f}</option>)}
      </select>
      <button type="button" onClick={run}>Export and download</button>
      <span role="status">{state}</span>
    </div>
  );
}

function Versions({ segment }) {
  const [versions, setVersions] = useState([]);
  const [left, setLeft] = useState("");
  const [right, setRight] = useState("");
  const [previewed, setPreviewed] = useState({});
  useEffect(() => {
    get(`/api/segments/${segment.id}/versions/?limit=1000`).then((b) => {
      setVersions(b.results);
      if (b.results.length) {
        setRight(String(b.results[0].version));
        setLeft(String(b.results[Math.min(1, b.results.length - 1)].version));
      }
    });
  }, [segment.id, segment.version]);
  const text = (v) => JSON.stringify((versions.find((x) => String(x.version) === v) || {}).definition, null, 2) || "";
  const preview = async (version) => {
    try {
      const body = await post(`/api/segments/${segment.id}/versions/${version}/preview/`, { limit: 0 });
      setPreviewed((p) => ({ ...p, [version]: `${body.matched_users.toLocaleString("en-US")} users match now` }));
    } catch (err) {
      setPreviewed((p) => ({ ...p, [version]: err.message }));
    }
  };
  const options = versions.map((v) => <option key={v.version} value={String(v.version)}>version {v.version}</option>);
  return (
    <div>
      <table class="list">
        <caption class="sr-only">Versions, newest first</caption>
        <thead><tr><th scope="col">Version</th><th scope="col">Created</th><th scope="col">By</th><th scope="col">Preview</th></tr></thead>
        <tbody>
          {versions.map((v) => (
            <tr key={v.version}>
              <td>{v.version}</td><td>{v.created_at}</td>
              <td>{v.author.user_id ? `user ${v.author.user_id}` : `key ${v.author.api_key_id}`}</td>
              <td><button type="button" class="small" onClick={() => preview(v.version)}
                aria-label={`Preview version ${v.version}`}>Preview</button> <span role="status">{previewed[v.version]}</span></td>
            </tr>
          ))}
        </tbody>
      </table>
      {versions.length > 1 && (
        <div class="diff">
          <div class="inline">
            <label for="diff-left">Compare</label>
            <select id="diff-left" value={left} onChange={(e) => setLeft(e.currentTarget.value)}>{options}</select>
            <label for="diff-right">with</label>
            <select id="diff-right" value={right} onChange={(e) => setRight(e.currentTarget.value)}>{options}</select>
          </div>
          <pre class="diff-lines" aria-label={`Changes from version ${left} to version ${right}`} tabindex="0">
            {diffLines(text(left), text(right)).map((d, i) => (
              <span key={i} class={d.op === "+" ? "added" : d.op === "-" ? "removed" : ""}>{`${d.op} ${d.line}\n`}</span>
            ))}
          </pre>
        </div>
      )}
    </div>
  );
}

function Computations({ jobs }) {
  return (
    <>
      <SizeChart jobs={jobs} />
      <details>
        <summary>Computations as a table</summary>
        <table class="list">
          <thead><tr><th scope="col">Job</th><th scope="col">Status</th><th scope="col">Finished</th>
            <th scope="col">Members</th><th scope="col">Entered</th><th scope="col">Exited</th></tr></thead>
          <tbody>{jobs.map((j) => (
            <tr key={j.job_id}><td>{j.job_id}</td><td>{j.status}</td><td>{j.finished_at}</td>
              <td class="num">{j.member_count}</td><td class="num">{j.entered_count}</td><td class="num">{j.exited_count}</td></tr>
          ))}</tbody>
        </table>
      </details>
    </>
  );
}

export function SegmentPage({ id, catalog, can }) {
  const [segment, setSegment] = useState(null);
  const [jobs, setJobs] = useState([]);
  const [error, setError] = useState("");
  const reload = () => {
    get(`/api/segments/${id}/`).then(setSegment).catch((e) => setError(e.message));
    get(`/api/segments/${id}/jobs/?limit=100`).then((b) => setJobs(b.results)).catch(() => {});
  };
  useEffect(reload, [id]);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!segment) return <p class="muted">Loading…</p>;
  return (
    <article class="segment-page">
      <div class="page-head">
        <h1>{segment.name}</h1>
        <span class={`status ${segment.status}`}>{segment.status}</span>
      </div>
      <p class="muted">{segment.description}</p>
      <dl class="facts">
        <dt>Members</dt><dd id="segment-members">{segment.member_count == null ? "not computed" : segment.member_count.toLocaleString("en-US")}</dd>
        <dt>Version</dt><dd>{segment.version}</dd>
        <dt>Last computed</dt><dd>{segment.last_computed_at || "never"}</dd>
        <dt>Recomputed every</dt><dd>{segment.compute_interval_minutes} min</dd>
      </dl>
      <section aria-labelledby="h-definition">
        <h2 id="h-definition">Definition</h2>
        <Definition segment={segment} catalog={catalog} can={can} onSaved={(s) => setSegment(s)} />
      </section>
      <section aria-labelledby="h-compute">
        <h2 id="h-compute">Computations</h2>
        <Compute segment={segment} can={can} onJob={reload} />
        <Computations jobs={jobs} />
      </section>
      <section aria-labelledby="h-members">
        <h2 id="h-members">Members</h2>
        <Export segment={segment} can={can} />
        <Members segment={segment} can={can} />
      </section>
      <section aria-labelledby="h-versions">
        <h2 id="h-versions">Version history</h2>
        <Versions segment={segment} />
      </section>
    </article>
  );
}
