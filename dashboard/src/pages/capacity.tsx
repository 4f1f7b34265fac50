/** Capacity: each pool's total, free and provisioned GiB over time (admin). */
import { get, type PoolHistory } from '../api.ts';
import { CapacityChart, formatGb } from '../capacity-chart.tsx';
import { PageHeader, Table } from '../components.tsx';
import { usePoll } from '../poll.ts';

export function CapacityPage({ token }: { token: string }) {
  const polled = usePoll(async (signal) => (await get<{ pools: PoolHistory[] }>(token, '/dashboard/pool-history', { experimental: true, signal })).pools, 5000, token);
  const pools = polled.data ?? [];
  const latest = (p: PoolHistory) => p.samples[p.samples.length - 1];
  return (
    <section>
      <PageHeader title="Capacity" at={polled.at} error={polled.error} />
      <p className="muted">Sampled in the API process from the volume services' reports since it started.</p>
      <Table testId="pools" rows={pools} rowId={(p) => p.name} empty="No pool has reported yet."
        columns={[
          { title: 'Pool', cell: (p) => p.name },
          { title: 'Backend', cell: (p) => p.volume_backend_name },
          { title: 'Total', cell: (p) => formatGb(latest(p)?.total_capacity_gb ?? 0) },
          { title: 'Free', cell: (p) => formatGb(latest(p)?.free_capacity_gb ?? 0) },
          { title: 'Provisioned', cell: (p) => formatGb(latest(p)?.provisioned_capacity_gb ?? 0) },
          { title: 'Samples', cell: (p) => p.samples.length },
        ]} />
      {pools.map((p) => (
        <article key={p.name} className="pool">
          <h2>{p.name}</h2>
          <CapacityChart pool={p} />
        </article>
      ))}
    </section>
  );
}
