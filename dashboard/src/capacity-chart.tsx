/**
 * A pool's capacity over time as a plain SVG line plot: total, free and
 * provisioned GiB against time. Plain SVG rather than a chart library: three
 * lines and two axes do not justify a dependency, and SVG scales and prints.
 */
import type { PoolHistory } from './api.ts';

const WIDTH = 640;
const HEIGHT = 220;
const PAD = { left: 56, right: 16, top: 12, bottom: 28 };

/** The series drawn, with their colours (CSS classes in styles.css). */
const SERIES = [
  { key: 'total_capacity_gb', label: 'total', className: 'series-total' },
  { key: 'free_capacity_gb', label: 'free', className: 'series-free' },
  { key: 'provisioned_capacity_gb', label: 'provisioned', className: 'series-provisioned' },
] as const;

/** Parses a Cinder time (UTC without a zone). */
const timeOf = (at: string): number => Date.parse(/Z|[+-]\d\d:\d\d$/.test(at) ? at : `${at}Z`);

/** One pool's plot. Fewer than two samples draw points, not lines. */
export function CapacityChart({ pool }: { pool: PoolHistory }) {
  const samples = pool.samples;
  if (samples.length === 0) return <p className="muted">No samples yet.</p>;
  const t0 = timeOf(samples[0]!.at);
  const t1 = Math.max(timeOf(samples[samples.length - 1]!.at), t0 + 1000);
  const yMax = niceCeil(Math.max(1, ...samples.flatMap((s) => [s.total_capacity_gb, s.free_capacity_gb, s.provisioned_capacity_gb])));
  const x = (at: string): number => PAD.left + ((timeOf(at) - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (gb: number): number => HEIGHT - PAD.bottom - (gb / yMax) * (HEIGHT - PAD.top - PAD.bottom);
  const ticks = [0, yMax / 2, yMax];
  return (
    <figure className="chart" data-testid="capacity-chart" data-pool={pool.name}>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={`Capacity of ${pool.name} over time`}>
        {ticks.map((v) => (
          <g key={v}>
            <line className="grid" x1={PAD.left} x2={WIDTH - PAD.right} y1={y(v)} y2={y(v)} />
            <text className="axis" x={PAD.left - 6} y={y(v) + 4} textAnchor="end">{formatGb(v)}</text>
          </g>
        ))}
        <text className="axis" x={PAD.left} y={HEIGHT - 8}>{new Date(t0).toLocaleTimeString()}</text>
        <text className="axis" x={WIDTH - PAD.right} y={HEIGHT - 8} textAnchor="end">{new Date(t1).toLocaleTimeString()}</text>
        {SERIES.map((s) => samples.length === 1
          ? <circle key={s.key} className={s.className} cx={x(samples[0]!.at)} cy={y(samples[0]![s.key])} r={3} />
          : <polyline key={s.key} className={s.className} fill="none" points={samples.map((p) => `${x(p.at).toFixed(1)},${y(p[s.key]).toFixed(1)}`).join(' ')} />)}
      </svg>
      <figcaption>
        {SERIES.map((s) => <span key={s.key} className={`legend ${s.className}`}>{s.label}</span>)}
      </figcaption>
    </figure>
  );
}

/** The next round number at or above `v` (1, 2, 5 × a power of ten), for the y axis. */
function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * p >= v) ?? 10) * p;
}

/** GiB with a unit, without needless decimals. */
export function formatGb(gb: number): string {
  return `${Number.isInteger(gb) ? gb : gb.toFixed(1)} GiB`;
}
