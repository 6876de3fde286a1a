import { useEffect, useState } from "preact/hooks";
import { get, post } from "./api.js";
import { Sparkline } from "./charts.jsx";
import { fieldErrors } from "./model.js";
import { Workbench } from "./Workbench.jsx";

const PAGE = 20;

export function useSegments() {
  const [segments, setSegments] = useState([]);
  useEffect(() => { get("/api/segments/?limit=1000").then((b) => setSegments(b.results)).catch(() => {}); }, []);
  return segments;
}

function SizeSparkline({ id, name }) {
  const [values, setValues] = useState(null);
  useEffect(() => {
    get(`/api/segments/${id}/jobs/?limit=20`).then((b) => setValues(
      b.results.filter((j) => j.status === "done").reverse().map((j) => j.member_count))).catch(() => setValues([]));
  }, [id]);
  return values ? <Sparkline values={values} label={`Size of ${name} over its last computations`} /> : null;
}

export function SegmentsList({ can }) {
  const [all, setAll] = useState(null);
  const [search, setSearch] = useState("");
  const [page, setPage] = useState(0);
  const [error, setError] = useState("");
  useEffect(() => {
    // Names are searched in the console: the list API pages by offset and has no name filter.
    get("/api/segments/?limit=1000").then((b) => setAll(b.results)).catch((e) => setError(e.message));
  }, []);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!all) return <p class="muted">Loading…</p>;
  const found = all.filter((s) => s.name.toLowerCase().includes(search.toLowerCase()));
  const pages = Math.max(1, Math.ceil(found.length / PAGE));
  const shown = found.slice(page * PAGE, page * PAGE + PAGE);
  return (
    <section>
      <div class="page-head">
        <h1>Segments</h1>
        {can("segments:write") && <a class="button" href="#/segments/new">New segment</a>}
      </div>
      <label for="segment-search">Search by name</label>
      <input id="segment-search" type="search" value={search} onInput={(e) => { setSearch(e.currentTarget.value); setPage(0); }} />
      <table class="list">
        <caption class="sr-only">Segments, {found.length} found</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Status</th>
          <th scope="col">Members</th><th scope="col">Last computed</th><th scope="col">Size over time</th></tr></thead>
        <tbody>
          {shown.map((s) => (
            <tr key={s.id}>
              <td><a href={`#/segments/${s.id}`}>{s.name}</a></td>
              <td>{s.segment_type}</td>
              <td><span class={`status ${s.status}`}>{s.status}</span></td>
              <td class="num">{s.member_count == null ? "—" : s.member_count.toLocaleString("en-US")}</td>
              <td>{s.last_computed_at || "never"}</td>
              <td><SizeSparkline id={s.id} name={s.name} /></td>
            </tr>
          ))}
          {!shown.length && <tr><td colspan="6" class="muted">No segment{search ? " with that name" : " yet"}.</td></tr>}
        </tbody>
      </table>
      <nav class="pager" aria-label="Segment pages">
        <button type="button" disabled={page === 0} onClick={() => setPage(page - 1)}>Previous</button>
        <span>Page {page + 1} of {pages}</span>
        <button type="button" disabled={page + 1 >= pages} onClick={() => setPage(page + 1)}>Next</button>
      </nav>
    </section>
  );
}

export function NewSegment({ catalog, can }) {
  const segments = useSegments();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [definition, setDefinition] = useState(undefined);
  const [saveError, setSaveError] = useState(null);
  if (!can("segments:write")) return <p>Your role may not create segments.</p>;
  const save = async (e) => {
    e.preventDefault();
    setSaveError(null);
    try {
      const created = await post("/api/segments/", { name, description, segment_type: "rule", definition });
      location.hash = `#/segments/${created.id}`;
    } catch (err) {
      setSaveError(err);
    }
  };
  const errs = saveError ? fieldErrors(saveError.body) : {};
  return (
    <section>
      <h1>New segment</h1>
      <form class="segment-meta" onSubmit={save} aria-label="New segment">
        <label for="segment-name">Name</label>
        <input id="segment-name" value={name} required maxLength={200} onInput={(e) => setName(e.currentTarget.value)}
          aria-invalid={errs.name ? "true" : undefined} />
        {errs.name && <span class="field-error" role="alert">{errs.name.join("; ")}</span>}
        <label for="segment-description">Description</label>
        <input id="segment-description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        <button type="submit" disabled={!name || definition === undefined}>Save segment</button>
        {saveError && <p class="error" role="alert">{saveError.message}</p>}
      </form>
      <Workbench catalog={catalog} segments={segments} onChange={setDefinition} externalErrors={errs} />
    </section>
  );
}
