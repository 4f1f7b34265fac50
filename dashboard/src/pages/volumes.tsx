/** Volumes: every volume the token may see, with its state and, in error, why. */
import type { Volume } from '../api.ts';
import { ListPage, Name, Reason, ShortId, Status, Time } from '../components.tsx';

export function VolumesPage({ token }: { token: string }) {
  return (
    <ListPage<Volume> token={token} title="Volumes" path="/volumes/detail?all_tenants=1" listKey="volumes" rowId={(v) => v.id} empty="No volumes."
      columns={[
        { title: 'Name', cell: (v) => <Name value={v.name} /> },
        { title: 'ID', cell: (v) => <ShortId id={v.id} /> },
        { title: 'Status', cell: (v) => <Status value={v.status} /> },
        { title: 'Size', cell: (v) => `${v.size} GiB` },
        { title: 'Type', cell: (v) => v.volume_type ?? '—' },
        { title: 'Host', cell: (v) => v['os-vol-host-attr:host'] ?? '—' },
        { title: 'Attached to', cell: (v) => v.attachments.length === 0 ? '—' : v.attachments.map((a) => a.server_id ?? a.host_name ?? a.attachment_id).join(', ') },
        { title: 'Created', cell: (v) => <Time value={v.created_at} /> },
        { title: 'Reason', cell: (v) => <Reason token={token} id={v.id} status={v.status} /> },
      ]} />
  );
}
