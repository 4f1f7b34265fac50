/**
 * Events, live: the newest status changes, followed by polling for the ones
 * after the newest shown (every two seconds), newest first.
 */
import { useRef } from 'react';
import { get, type StatusEvent } from '../api.ts';
import { PageHeader, ShortId, Status, Table, Time } from '../components.tsx';
import { usePoll } from '../poll.ts';

/** Events kept on the page. */
const KEPT = 200;

export function EventsPage({ token }: { token: string }) {
  const seen = useRef<StatusEvent[]>([]);
  const polled = usePoll(async (signal) => {
    const newest = seen.current[0];
    const query = newest ? `&after=${encodeURIComponent(newest.created_at)}` : '';
    const fresh = (await get<{ events: StatusEvent[] }>(token, `/dashboard/events?all_tenants=1&limit=100${query}`, { experimental: true, signal })).events;
    // `after` includes events of the newest one's millisecond: drop those already shown.
    const known = new Set(seen.current.map((e) => e.id));
    seen.current = [...fresh.filter((e) => !known.has(e.id)), ...seen.current].slice(0, KEPT);
    return seen.current;
  }, 2000, token);
  return (
    <section>
      <PageHeader title="Events" at={polled.at} error={polled.error}>
        <span className="live" data-testid="live">● live</span>
      </PageHeader>
      <Table testId="events" rows={polled.data ?? []} rowId={(e) => e.id} empty="No events yet."
        columns={[
          { title: 'Time', cell: (e) => <Time value={e.created_at} /> },
          { title: 'Resource', cell: (e) => e.resource_type },
          { title: 'ID', cell: (e) => <ShortId id={e.resource_id} /> },
          { title: 'Event', cell: (e) => e.event },
          { title: 'From', cell: (e) => (e.from_status ? <Status value={e.from_status} /> : '—') },
          { title: 'To', cell: (e) => (e.to_status ? <Status value={e.to_status} /> : '—') },
          { title: 'Project', cell: (e) => <ShortId id={e.project_id} /> },
        ]} />
    </section>
  );
}
