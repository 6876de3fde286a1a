import { useEffect, useState } from "preact/hooks";
import { ApiError, currentCredential, get, onCredentialChange, signInWithKey, signInWithPassword, signOut, whoAmI } from "./api.js";
import { Broadcasts } from "./Broadcasts.jsx";
import { JourneyPage, Journeys, RunPage } from "./Journeys.jsx";
import { Profile } from "./Profile.jsx";
import { SegmentPage } from "./SegmentPage.jsx";
import { NewSegment, SegmentsList } from "./Segments.jsx";

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/segments");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/segments");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function SignIn({ onSignedIn }) {
  const [mode, setMode] = useState("password");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true); setError("");
    try {
      onSignedIn(mode === "password" ? await signInWithPassword(form.get("email"), form.get("password"))
        : await signInWithKey(form.get("key")));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>segops</h1>
      <div role="tablist" aria-label="Sign in with" class="tabs">
        <button type="button" role="tab" aria-selected={mode === "password"} onClick={() => setMode("password")}>Email and password</button>
        <button type="button" role="tab" aria-selected={mode === "key"} onClick={() => setMode("key")}>API key</button>
      </div>
      <form onSubmit={submit} aria-label="Sign in">
        {mode === "password" ? (
          <>
            <label for="email">Email</label>
            <input id="email" name="email" type="email" autocomplete="username" required />
            <label for="password">Password</label>
            <input id="password" name="password" type="password" autocomplete="current-password" required />
          </>
        ) : (
          <>
            <label for="key">API key</label>
            <input id="key" name="key" type="password" autocomplete="off" placeholder="sk_live_…" required />
            <p class="muted">Kept in this tab only (session storage) and sent as <code>Authorization: ApiKey …</code>.</p>
          </>
        )}
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>Sign in</button>
      </form>
    </main>
  );
}

export function App() {
  const hash = useHash();
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(currentCredential()));
  const [catalog, setCatalog] = useState({});

  useEffect(() => onCredentialChange((c) => { if (!c) setMe(null); }), []);
  useEffect(() => {
    if (!currentCredential()) return;
    whoAmI().then(setMe).catch(() => setMe(null)).finally(() => setChecking(false));
  }, []);
  useEffect(() => {
    if (me && me.scopes.includes("segments:read")) get("/api/catalog/").then(setCatalog).catch(() => setCatalog({}));
  }, [me]);

  if (checking) return <p class="muted">Loading…</p>;
  if (!me) return <SignIn onSignedIn={setMe} />;

  const can = (scope) => me.scopes.includes(scope);
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let page;
  if (parts[0] === "segments" && parts[1] === "new") page = <NewSegment catalog={catalog} can={can} />;
  else if (parts[0] === "segments" && parts[1]) page = <SegmentPage id={Number(parts[1])} catalog={catalog} can={can} key={parts[1]} />;
  else if (parts[0] === "profiles" && parts[1]) page = <Profile userId={parts[1]} key={parts[1]} />;
  else if (parts[0] === "journeys" && parts[1] && parts[2] === "runs") page = <RunPage journeyId={parts[1]} runId={parts[3]} />;
  else if (parts[0] === "journeys" && parts[1]) page = <JourneyPage id={parts[1]} />;
  else if (parts[0] === "journeys") page = <Journeys />;
  else if (parts[0] === "broadcasts") page = <Broadcasts me={me} can={can} />;
  else page = <SegmentsList can={can} />;
  const current = parts[0] || "segments";

  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <span class="brand">segops</span>
        <nav aria-label="Main">
          {[["segments", "Segments"], ["journeys", "Journeys"], ["broadcasts", "Broadcasts"]].map(([k, label]) => (
            <a key={k} href={`#/${k}`} aria-current={current === k ? "page" : undefined}>{label}</a>
          ))}
          <a href="/docs">API docs</a>
        </nav>
        <span class="who">
          tenant {me.tenant_id} · {me.role}{me.api_key_id ? ` (key ${me.api_key_id})` : ""}
          <button type="button" class="link" onClick={() => { signOut(); setMe(null); }}>Sign out</button>
        </span>
      </header>
      <main id="main" tabindex="-1">{page}</main>
    </>
  );
}
