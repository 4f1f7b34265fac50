/** Snapshots: every snapshot the token may see, with its state and, in error, why. */
import type { Snapshot } from '../api.ts';
import { ListPage, Name, Reason, ShortId, Status, Time } from '../components.tsx';

export function SnapshotsPage({ token }: { token: string }) {
  return (
    <ListPage<Snapshot> token={token} title="Snapshots" path="/snapshots/detail?all_tenants=1" listKey="snapshots" rowId={(s) => s.id} empty="No snapshots."
      columns={[
        { title: 'Name', cell: (s) => <Name value={s.name} /> },
        { title: 'ID', cell: (s) => <ShortId id={s.id} /> },
        { title: 'Status', cell: (s) => <Status value={s.status} /> },
        { title: 'Size', cell: (s) => `${s.size} GiB` },
        { title: 'Volume', cell: (s) => <ShortId id={s.volume_id} /> },
        { title: 'Created', cell: (s) => <Time value={s.created_at} /> },
        { title: 'Reason', cell: (s) => <Reason token={token} id={s.id} status={s.status} /> },
      ]} />
  );
}
