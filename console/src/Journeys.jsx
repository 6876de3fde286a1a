import { useEffect, useState } from "preact/hooks";
import { get } from "./api.js";

function useGet(path) {
  const [state, setState] = useState({ data: null, error: "" });
  useEffect(() => { get(path).then((data) => setState({ data, error: "" })).catch((e) => setState({ data: null, error: e.message })); }, [path]);
  return state;
}

export function Journeys() {
  const { data, error } = useGet("/api/journeys/?limit=100");
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!data) return <p class="muted">Loading…</p>;
  return (
    <section>
      <h1>Journeys</h1>
      <table class="list">
        <thead><tr><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Runs</th><th scope="col">Active</th>
          <th scope="col">Completed</th><th scope="col">Sent</th></tr></thead>
        <tbody>
          {data.results.map((j) => (
            <tr key={j.id}><td><a href={`#/journeys/${j.id}`}>{j.name}</a></td><td><span class={`status ${j.status}`}>{j.status}</span></td>
              <td class="num">{j.stats.runs}</td><td class="num">{j.stats.activeRuns}</td>
              <td class="num">{j.stats.completedRuns}</td><td class="num">{j.stats.sentCount}</td></tr>
          ))}
          {!data.results.length && <tr><td colspan="6" class="muted">No journey yet.</td></tr>}
        </tbody>
      </table>
    </section>
  );
}

export function JourneyPage({ id }) {
  const journey = useGet(`/api/journeys/${id}/`);
  const runs = useGet(`/api/journeys/${id}/runs/?limit=50`);
  if (journey.error) return <p class="error" role="alert">{journey.error}</p>;
  if (!journey.data) return <p class="muted">Loading…</p>;
  const j = journey.data;
  return (
    <article>
      <h1>{j.name}</h1>
      <p><span class={`status ${j.status}`}>{j.status}</span> · version {j.version} · trigger <code>{JSON.stringify(j.trigger)}</code></p>
      <h2>Steps</h2>
      <ol class="steps-list">
        {(j.steps || []).map((s) => <li key={s.id}><strong>{s.type}</strong> <code>{s.id}</code> <code>{JSON.stringify(s)}</code></li>)}
      </ol>
      <h2>Runs</h2>
      {runs.data ? (
        <table class="list">
          <thead><tr><th scope="col">Run</th><th scope="col">User</th><th scope="col">Status</th><th scope="col">Current step</th><th scope="col">Wakes</th><th scope="col">Started</th></tr></thead>
          <tbody>{runs.data.results.map((r) => (
            <tr key={r.id}><td><a href={`#/journeys/${id}/runs/${r.id}`}>{r.id}</a></td><td>{r.userId}</td><td>{r.status}</td>
              <td>{r.currentStep || (r.steps && r.steps.length ? r.steps[r.steps.length - 1].stepId : "")}</td>
              <td>{r.wakeAt || ""}</td><td>{r.startedAt}</td></tr>
          ))}</tbody>
        </table>
      ) : <p class="muted">{runs.error || "Loading…"}</p>}
    </article>
  );
}

export function RunPage({ journeyId, runId }) {
  const { data, error } = useGet(`/api/journeys/${journeyId}/runs/${runId}/`);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!data) return <p class="muted">Loading…</p>;
  return (
    <article>
      <h1>Run {data.id} of <a href={`#/journeys/${journeyId}`}>journey {journeyId}</a></h1>
      <p>{data.userId} · {data.status}{data.wakeAt ? ` · wakes ${data.wakeAt}` : ""}{data.exitReason ? ` (${data.exitReason})` : ""}{data.lastError ? ` · ${data.lastError}` : ""}</p>
      <h2>Step history</h2>
      <ol class="timeline">
        {data.steps.map((s, i) => <li key={i}><time>{s.at}</time> <strong>{s.stepId}</strong> {s.type}
          {s.sendStatus ? ` · send ${s.sendStatus}` : ""}{s.until ? ` · until ${s.until}` : ""}</li>)}
      </ol>
    </article>
  );
}
