/**
 * The dashboard: a sign-in form, then one page per kind of thing, chosen by the
 * URL's hash (`#/volumes`), so every page has an address and the server serves
 * one file for all of them.
 */
import { useEffect, useState, type FormEvent } from 'react';
import { ApiError, get, storedToken, storeToken, TOKEN_REFUSED_EVENT } from './api.ts';
import { AttachmentsPage } from './pages/attachments.tsx';
import { BackupsPage } from './pages/backups.tsx';
import { CapacityPage } from './pages/capacity.tsx';
import { EventsPage } from './pages/events.tsx';
import { ServicesPage } from './pages/services.tsx';
import { SnapshotsPage } from './pages/snapshots.tsx';
import { VolumesPage } from './pages/volumes.tsx';

/** The pages, in the order of the navigation. */
const PAGES = [
  { path: 'capacity', title: 'Capacity', Page: CapacityPage },
  { path: 'volumes', title: 'Volumes', Page: VolumesPage },
  { path: 'snapshots', title: 'Snapshots', Page: SnapshotsPage },
  { path: 'backups', title: 'Backups', Page: BackupsPage },
  { path: 'attachments', title: 'Attachments', Page: AttachmentsPage },
  { path: 'services', title: 'Services', Page: ServicesPage },
  { path: 'events', title: 'Events', Page: EventsPage },
] as const;

/** The page the hash names; the first when it names none. */
function pageOfHash(): (typeof PAGES)[number] {
  const path = window.location.hash.replace(/^#\/?/, '');
  return PAGES.find((p) => p.path === path) ?? PAGES[0];
}

export function App() {
  const [token, setToken] = useState(storedToken());
  const [page, setPage] = useState(pageOfHash());
  // Why the tab was signed out, shown on the sign-in form.
  const [notice, setNotice] = useState<string>();
  useEffect(() => {
    const onHash = () => setPage(pageOfHash());
    window.addEventListener('hashchange', onHash);
    // A token the API stops accepting (expired, revoked) signs the tab out, saying so, instead of every page failing alike.
    // While signing in (no token kept yet) the form reports the refusal itself.
    const onRefused = (e: Event) => {
      if (storedToken() === undefined) return;
      storeToken(undefined);
      setToken(undefined);
      setNotice(`Signed out: the API no longer accepts this token (${(e as CustomEvent<string>).detail}). Sign in again with a new token.`);
    };
    window.addEventListener(TOKEN_REFUSED_EVENT, onRefused);
    return () => {
      window.removeEventListener('hashchange', onHash);
      window.removeEventListener(TOKEN_REFUSED_EVENT, onRefused);
    };
  }, []);
  if (!token) return <SignIn notice={notice} onSignedIn={(t) => { storeToken(t); setNotice(undefined); setToken(t); }} />;
  const { Page } = page;
  return (
    <div className="layout">
      <nav>
        <div className="brand">Basalt</div>
        {PAGES.map((p) => (
          <a key={p.path} href={`#/${p.path}`} className={p.path === page.path ? 'active' : ''} data-testid={`nav-${p.path}`}>{p.title}</a>
        ))}
        <button type="button" className="sign-out" data-testid="sign-out" onClick={() => { storeToken(undefined); setToken(undefined); }}>Sign out</button>
      </nav>
      <main data-page={page.path}>
        <Page token={token} />
      </main>
    </div>
  );
}

/**
 * Asks for a token and checks it with one API call before keeping it, so a
 * wrong token is told at once, in the API's own words.
 */
function SignIn({ notice, onSignedIn }: { notice?: string | undefined; onSignedIn: (token: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | undefined>(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) return;
    setBusy(true);
    setError(undefined);
    try {
      await get(token, '/volumes?limit=1');
      onSignedIn(token);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? `Not signed in: ${err.message}` : (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="sign-in" onSubmit={(e) => void submit(e)}>
      <h1>Basalt</h1>
      <label htmlFor="token">Token</label>
      <input id="token" name="token" type="password" autoComplete="off" value={value} onChange={(e) => setValue(e.target.value)}
        placeholder="user:project (noauth) or a Keystone token" data-testid="token" />
      <button type="submit" disabled={busy} data-testid="sign-in">Sign in</button>
      {error ? <p className="error" role="alert" data-testid="sign-in-error">{error}</p> : null}
      <p className="muted">The token is sent to the API as X-Auth-Token and kept in this tab only.</p>
    </form>
  );
}
