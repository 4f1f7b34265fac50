/**
 * Events, live. The token's project: its newest events, then every new one as
 * it happens, pushed by the project's event stream (`/events/stream`). All
 * projects (an admin's choice): the newest events of every project, polled
 * every two seconds, since the stream is one project's.
 */
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { get, type StatusEvent } from '../api.ts';
import { PageHeader, ShortId, Status, Table, Time, type Column } from '../components.tsx';
import { followEvents, type StreamStatus } from '../event-stream.ts';
import { usePoll } from '../poll.ts';

/** Events kept on the page. */
const KEPT = 200;

/** A stored time (`…T07:00:00.123Z`) as the API's views give it (`…T07:00:00.123000`, UTC), so the two sort together. */
function cinderTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z?$/.exec(iso);
  return m ? `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}` : iso;
}

/** Adds `fresh` to `shown` (newest first), each event once, at most {@link KEPT}. */
function merge(shown: StatusEvent[], fresh: StatusEvent[]): StatusEvent[] {
  const byId = new Map<string, StatusEvent>();
  for (const e of [...fresh, ...shown]) if (!byId.has(e.id)) byId.set(e.id, e);
  return [...byId.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0)).slice(0, KEPT);
}

const COLUMNS: Column<StatusEvent>[] = [
  { title: 'Time', cell: (e) => <Time value={e.created_at} /> },
  { title: 'Resource', cell: (e) => e.resource_type },
  { title: 'ID', cell: (e) => <ShortId id={e.resource_id} /> },
  { title: 'Event', cell: (e) => e.event },
  { title: 'From', cell: (e) => (e.from_status ? <Status value={e.from_status} /> : '—') },
  { title: 'To', cell: (e) => (e.to_status ? <Status value={e.to_status} /> : '—') },
];
const PROJECT_COLUMN: Column<StatusEvent> = { title: 'Project', cell: (e) => <ShortId id={e.project_id} /> };

export function EventsPage({ token }: { token: string }) {
  const [allProjects, setAllProjects] = useState(false);
  return (
    <section>
      {allProjects ? <AllProjectsEvents token={token} toggle={<Toggle checked onChange={setAllProjects} />} />
        : <ProjectEvents token={token} toggle={<Toggle checked={false} onChange={setAllProjects} />} />}
    </section>
  );
}

function Toggle({ checked, onChange }: { checked: boolean; onChange: (v: boolean) => void }) {
  return (
    <label className="toggle">
      <input type="checkbox" checked={checked} onChange={(e) => onChange(e.target.checked)} data-testid="all-projects" /> all projects (admin)
    </label>
  );
}

/** The token's project: the newest events, then the stream. */
function ProjectEvents({ token, toggle }: { token: string; toggle: ReactNode }) {
  const [events, setEvents] = useState<StatusEvent[]>([]);
  const [status, setStatus] = useState<StreamStatus>({ connected: false });
  const [loaded, setLoaded] = useState<{ at?: Date; error?: string }>({});
  useEffect(() => {
    const abort = new AbortController();
    // The stream first, from now; then the newest events before it: together, no gap (each event is shown once).
    void followEvents(token, abort.signal, (e) => {
      setEvents((shown) => merge(shown, [{ ...e, id: e.event_id, project_id: '', created_at: cinderTime(e.created_at) }]));
      setLoaded({ at: new Date() });
    }, setStatus);
    get<{ events: StatusEvent[] }>(token, '/dashboard/events?limit=100', { experimental: true, signal: abort.signal })
      .then((r) => { setEvents((shown) => merge(shown, r.events)); setLoaded({ at: new Date() }); })
      .catch((err: Error) => { if (!abort.signal.aborted) setLoaded({ at: new Date(), error: err.message }); });
    return () => abort.abort();
  }, [token]);
  return (
    <>
      <PageHeader title="Events" at={loaded.at} error={loaded.error ?? status.error}>
        <span className={status.connected ? 'live' : 'muted'} data-testid="live">{status.connected ? '● live' : '○ connecting…'}</span>
        {toggle}
      </PageHeader>
      <Table testId="events" rows={events} rowId={(e) => e.id} empty="No events yet." columns={COLUMNS} />
    </>
  );
}

/** Every project (an admin's `all_tenants`): the newest events, polled. */
function AllProjectsEvents({ token, toggle }: { token: string; toggle: ReactNode }) {
  const seen = useRef<StatusEvent[]>([]);
  const polled = usePoll(async (signal) => {
    const newest = seen.current[0];
    const query = newest ? `&after=${encodeURIComponent(newest.created_at)}` : '';
    const fresh = (await get<{ events: StatusEvent[] }>(token, `/dashboard/events?all_tenants=1&limit=100${query}`, { experimental: true, signal })).events;
    seen.current = merge(seen.current, fresh);
    return seen.current;
  }, 2000, `${token} all`);
  return (
    <>
      <PageHeader title="Events" at={polled.at} error={polled.error}>
        <span className="live" data-testid="live">● polling every 2 s</span>
        {toggle}
      </PageHeader>
      <Table testId="events" rows={polled.data ?? []} rowId={(e) => e.id} empty="No events yet." columns={[...COLUMNS, PROJECT_COLUMN]} />
    </>
  );
}
