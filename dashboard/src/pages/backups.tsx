/** Backups: every backup the token may see, with its state and, in error, why. */
import type { Backup } from '../api.ts';
import { ListPage, Name, Reason, ShortId, Status, Time } from '../components.tsx';

export function BackupsPage({ token }: { token: string }) {
  return (
    <ListPage<Backup> token={token} title="Backups" path="/backups/detail?all_tenants=1" listKey="backups" rowId={(b) => b.id} empty="No backups."
      columns={[
        { title: 'Name', cell: (b) => <Name value={b.name} /> },
        { title: 'ID', cell: (b) => <ShortId id={b.id} /> },
        { title: 'Status', cell: (b) => <Status value={b.status} /> },
        { title: 'Size', cell: (b) => `${b.size} GiB` },
        { title: 'Volume', cell: (b) => <ShortId id={b.volume_id} /> },
        { title: 'Incremental', cell: (b) => (b.is_incremental ? 'yes' : 'no') },
        { title: 'Created', cell: (b) => <Time value={b.created_at} /> },
        { title: 'Reason', cell: (b) => <Reason token={token} id={b.id} status={b.status} fallback={b.fail_reason} /> },
      ]} />
  );
}
