import { useEffect, useState } from "preact/hooks";
import { get, post } from "./api.js";

const LIVE = new Set(["sending", "prepared"]);

function Countdown({ until }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => { const t = setInterval(() => setNow(Date.now()), 1000); return () => clearInterval(t); }, []);
  const left = Math.max(0, Math.round((Date.parse(until) - now) / 1000));
  return <span>{left ? `expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` : "expired"}</span>;
}

/** Why this credential may not send, or "" if it may. */
function sendBlocker(me, can) {
  if (!can("broadcasts:write")) return `Your ${me.role === "service" ? "key" : "role"} may not send broadcasts (no broadcasts:write).`;
  if (!can("sends:write")) return "This credential has no sends:write scope.";
  if (!me.allow_sends) return "This key may prepare but not send (allow_sends is off).";
  return "";
}

export function Broadcasts({ me, can }) {
  const [list, setList] = useState(null);
  const [templates, setTemplates] = useState([]);
  const [segments, setSegments] = useState([]);
  const [template, setTemplate] = useState("");
  const [segment, setSegment] = useState("");
  const [prepared, setPrepared] = useState(null);
  const [error, setError] = useState("");
  const reload = () => get("/api/broadcasts/?limit=50").then((b) => setList(b.results)).catch((e) => setError(e.message));
  useEffect(() => {
    reload();
    if (can("templates:read")) get("/api/templates/?limit=1000").then((b) => setTemplates(b.results)).catch(() => {});
    get("/api/segments/?limit=1000").then((b) => setSegments(b.results)).catch(() => {});
  }, []);
  useEffect(() => {
    if (!list || !list.some((b) => b.status === "sending")) return undefined;
    const t = setTimeout(reload, 1000);
    return () => clearTimeout(t);
  }, [list]);
  const blocker = sendBlocker(me, can);
  const prepare = async (e) => {
    e.preventDefault();
    setError("");
    try {
      setPrepared(await post("/api/broadcasts/prepare/", { templateId: Number(template), audience: { segmentId: Number(segment) } }));
      reload();
    } catch (err) { setError(err.message); }
  };
  const redeem = async (id) => {
    setError("");
    try {
      await post("/api/broadcasts/send-prepared/", { preparedSendId: id });
      setPrepared(null);
      reload();
    } catch (err) { setError(err.message); }
  };
  return (
    <section>
      <h1>Broadcasts</h1>
      {can("broadcasts:write") && (
        <form class="inline" onSubmit={prepare} aria-label="Prepare a broadcast">
          <label for="bc-template">Template</label>
          <select id="bc-template" value={template} required onChange={(e) => setTemplate(e.currentTarget.value)}>
            <option value="">—</option>
            {templates.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
          </select>
          <label for="bc-segment">Audience</label>
          <select id="bc-segment" value={segment} required onChange={(e) => setSegment(e.currentTarget.value)}>
            <option value="">—</option>
            {segments.map((s) => <option key={s.id} value={s.id}>{s.name}</option>)}
          </select>
          <button type="submit">Prepare</button>
        </form>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      {prepared && (
        <div class="prepared-send" role="region" aria-label="Prepared broadcast">
          <p><strong>{prepared.audienceSize.toLocaleString("en-US")}</strong> recipients (frozen) · <Countdown until={prepared.expiresAt} /></p>
          <p class="muted">Sample: {prepared.sample.map((s) => (typeof s === "object" ? s.userId || s.user_id || JSON.stringify(s) : s)).join(", ")}</p>
          <button type="button" onClick={() => redeem(prepared.id)} disabled={Boolean(blocker)}
            aria-describedby={blocker ? "send-blocker" : undefined}>Send now</button>
          {blocker && <span id="send-blocker" class="muted">{blocker}</span>}
        </div>
      )}
      {!can("broadcasts:write") && <p class="muted" id="send-blocker">{blocker}</p>}
      {list && (
        <table class="list">
          <thead><tr><th scope="col">Broadcast</th><th scope="col">Status</th><th scope="col">Audience</th><th scope="col">Sent</th>
            <th scope="col">Pending</th><th scope="col">Failed</th><th scope="col">Send</th></tr></thead>
          <tbody>{list.map((b) => (
            <tr key={b.id}><td>{b.name || `#${b.id}`}</td><td><span class={`status ${b.status}`}>{b.status}</span>
              {b.status === "prepared" && <> · <Countdown until={b.expiresAt} /></>}</td>
              <td class="num">{b.audienceSize}</td><td class="num">{b.progress.sentCount}</td>
              <td class="num">{b.progress.pendingCount}</td><td class="num">{b.progress.failedCount}</td>
              <td>{b.status === "prepared" && can("broadcasts:write") && (
                <button type="button" class="small" disabled={Boolean(blocker)} title={blocker || undefined}
                  aria-label={`Send ${b.name || `broadcast ${b.id}`}${blocker ? ` (${blocker})` : ""}`}
                  onClick={() => redeem(b.id)}>Send</button>)}</td></tr>
          ))}
          {!list.length && <tr><td colspan="7" class="muted">No broadcast yet.</td></tr>}</tbody>
        </table>
      )}
    </section>
  );
}
