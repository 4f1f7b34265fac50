/** Services and clusters (admin): each with its state and latest heartbeat. */
import { get, type Cluster, type Service } from '../api.ts';
import { PageHeader, Status, Table, Time } from '../components.tsx';
import { usePoll } from '../poll.ts';

export function ServicesPage({ token }: { token: string }) {
  const services = usePoll(async (signal) => (await get<{ services: Service[] }>(token, '/os-services', { signal })).services, 5000, token);
  const clusters = usePoll(async (signal) => (await get<{ clusters: Cluster[] }>(token, '/clusters/detail', { signal })).clusters, 5000, token);
  return (
    <section>
      <PageHeader title="Services" at={services.at} error={services.error} />
      <Table testId="services" rows={services.data ?? []} rowId={(s) => `${s.binary}@${s.host}`} empty="No services."
        columns={[
          { title: 'Binary', cell: (s) => s.binary },
          { title: 'Host', cell: (s) => s.host },
          { title: 'Zone', cell: (s) => s.zone },
          { title: 'Status', cell: (s) => <Status value={s.status} /> },
          { title: 'State', cell: (s) => <Status value={s.state} /> },
          { title: 'Heartbeat', cell: (s) => <Time value={s.updated_at} /> },
          { title: 'Disabled reason', cell: (s) => s.disabled_reason ?? '—' },
        ]} />
      <PageHeader title="Clusters" at={clusters.at} error={clusters.error} />
      <Table testId="clusters" rows={clusters.data ?? []} rowId={(c) => `${c.binary}@${c.name}`} empty="No clusters."
        columns={[
          { title: 'Name', cell: (c) => c.name },
          { title: 'Binary', cell: (c) => c.binary },
          { title: 'State', cell: (c) => <Status value={c.state} /> },
          { title: 'Status', cell: (c) => <Status value={c.status} /> },
          { title: 'Hosts', cell: (c) => c.num_hosts },
          { title: 'Down', cell: (c) => c.num_down_hosts },
          { title: 'Heartbeat', cell: (c) => <Time value={c.last_heartbeat} /> },
        ]} />
    </section>
  );
}
