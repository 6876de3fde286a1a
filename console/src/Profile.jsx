import { useEffect, useState } from "preact/hooks";
import { get } from "./api.js";

export function Profile({ userId }) {
  const [profile, setProfile] = useState(null);
  const [error, setError] = useState("");
  const [names, setNames] = useState({});
  useEffect(() => {
    get("/api/segments/?limit=1000").then((b) => setNames(Object.fromEntries(b.results.map((s) => [s.id, s.name]))))
      .catch(() => {});
  }, []);
  useEffect(() => {
    get(`/api/profiles/${encodeURIComponent(userId)}/`).then(setProfile).catch((e) => setError(e.message));
  }, [userId]);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!profile) return <p class="muted">Loading…</p>;
  const events = profile.recent_events || [];
  const segments = profile.segment_ids || [];
  return (
    <article>
      <h1>Profile: {userId}</h1>
      <section aria-labelledby="h-traits">
        <h2 id="h-traits">Traits</h2>
        <dl class="facts">
          {Object.entries(profile.traits || {}).flatMap(([k, v]) => [<dt key={`t${k}`}>{k}</dt>,
            <dd key={`v${k}`}>{typeof v === "string" ? v : JSON.stringify(v)}</dd>])}
        </dl>
        {!Object.keys(profile.traits || {}).length && <p class="muted">No traits.</p>}
      </section>
      <section aria-labelledby="h-segments">
        <h2 id="h-segments">Current segments</h2>
        <ul>{segments.map((id) => <li key={id}><a href={`#/segments/${id}`}>{names[id] || `segment ${id}`}</a></li>)}</ul>
        {!segments.length && <p class="muted">In no computed segment.</p>}
      </section>
      <section aria-labelledby="h-timeline">
        <h2 id="h-timeline">Recent events</h2>
        <ol class="timeline">
          {events.map((e, i) => (
            <li key={e.event_id || i}><time>{e.occurred_at}</time> <strong>{e.event_type}</strong>{" "}
              <code>{JSON.stringify(e.properties || {})}</code></li>
          ))}
        </ol>
        {!events.length && <p class="muted">No events.</p>}
      </section>
    </article>
  );
}
