/** Attachments (3.27): which volume is attached where, and in what state. */
import type { Attachment } from '../api.ts';
import { ListPage, ShortId, Status, Time } from '../components.tsx';

export function AttachmentsPage({ token }: { token: string }) {
  return (
    <ListPage<Attachment> token={token} title="Attachments" path="/attachments/detail?all_tenants=1" listKey="attachments" rowId={(a) => a.id} empty="No attachments."
      columns={[
        { title: 'ID', cell: (a) => <ShortId id={a.id} /> },
        { title: 'Volume', cell: (a) => <ShortId id={a.volume_id} /> },
        { title: 'Instance', cell: (a) => a.instance ?? '—' },
        { title: 'Status', cell: (a) => <Status value={a.status} /> },
        { title: 'Mode', cell: (a) => a.attach_mode ?? '—' },
        { title: 'Attached at', cell: (a) => <Time value={a.attached_at} /> },
      ]} />
  );
}
