/**
 * QoS at the export (issue 18, part 4): the QoS specs of a volume's type —
 * Cinder's keys — limit the I/O of every connection to the volume, on both
 * data planes, together.
 *
 * Each limit is a lane shaped by the generic cell rate algorithm (GCRA, as
 * ATM and many rate limiters use it): a lane keeps one number, the
 * theoretical arrival time (TAT) of the next unit, in nanoseconds of
 * CLOCK_MONOTONIC — the clock of `process.hrtime` and of the native threads
 * alike. A request of cost c on a lane of T ns per unit and burst tolerance τ
 * may start at max(now, TAT − τ) and moves TAT to max(TAT, start) + c·T; it
 * waits until the latest start of its lanes. The TATs live in a
 * SharedArrayBuffer the native threads update with the same compare-and-swap
 * (nbd_dataplane.c), so one volume's limit holds across its connections and
 * both planes, with no lock.
 *
 * Keys (front-end and back-end consumers alike: Basalt's export is both):
 * `total|read|write_iops_sec`, `total|read|write_bytes_sec`, their `_max`
 * burst ceilings with `_max_length` (seconds, default 1), the `_per_gb`
 * variants (times the volume's size, at least `_per_gb_min`), and
 * `size_iops_sec` (an I/O larger than it counts as several). Values must be
 * positive numbers; 0 or absent means no limit on that lane.
 */

/** The lanes, in the native plane's order (nbd_dataplane.c QOS_*). */
export const QOS_LANES = ['total_iops', 'read_iops', 'write_iops', 'total_bytes', 'read_bytes', 'write_bytes'] as const;
export type QosLane = typeof QOS_LANES[number];

/** Effective limits of one volume: units per second and burst units per lane; IOPS accounting size. */
export interface QosLimits {
  rates: Partial<Record<QosLane, number>>;
  bursts: Partial<Record<QosLane, number>>;
  /** An I/O of more bytes counts as ceil(bytes / sizeIops) operations; 0: every I/O is one. */
  sizeIops: number;
}

/** Without a `_max`: the burst a lane allows, in seconds of its rate (QEMU's throttling allows a tenth). */
const DEFAULT_BURST_SECONDS = 0.1;

/** A spec value as a positive number; undefined when absent or 0. @throws Error naming the key for anything else. */
function num(specs: Record<string, string>, key: string): number | undefined {
  const raw = specs[key];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`QoS spec ${key} must be a number of at least 0, not "${raw}"`);
  return n === 0 ? undefined : n;
}

/** The keys that set limits (what a QoS spec may hold beside `consumer`). */
export const QOS_KEYS: readonly string[] = [
  ...QOS_LANES.flatMap((l) => {
    const k = `${l}_sec`;
    return [k, `${k}_max`, `${k}_max_length`, `${k}_per_gb`, `${k}_per_gb_min`];
  }),
  'size_iops_sec',
];

/**
 * The limits `specs` set for a volume of `sizeGiB`, or undefined when they set none.
 * @throws Error naming a key whose value is not a number.
 */
export function qosLimits(specs: Record<string, string>, sizeGiB: number): QosLimits | undefined {
  const rates: QosLimits['rates'] = {};
  const bursts: QosLimits['bursts'] = {};
  for (const lane of QOS_LANES) {
    const k = `${lane}_sec`;
    let rate = num(specs, k);
    const perGb = num(specs, `${k}_per_gb`);
    if (perGb !== undefined) rate = Math.max(perGb * sizeGiB, num(specs, `${k}_per_gb_min`) ?? 0);
    if (rate === undefined) continue;
    rates[lane] = rate;
    const max = num(specs, `${k}_max`);
    bursts[lane] = max !== undefined && max > rate ? max * (num(specs, `${k}_max_length`) ?? 1) : rate * DEFAULT_BURST_SECONDS;
  }
  if (Object.keys(rates).length === 0) return undefined;
  return { rates, bursts, sizeIops: num(specs, 'size_iops_sec') ?? 0 };
}

/** Two limits alike (a connection reuses the volume's limiter when its type's specs did not change). */
function sameLimits(a: QosLimits, b: QosLimits): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The current CLOCK_MONOTONIC time in ns (what the native threads read). */
const monotonicNs = (): bigint => process.hrtime.bigint();

/**
 * One volume's limiter: the lanes' TATs in shared memory (for the native
 * threads) and their parameters (`[ns per unit, τ ns]` per lane, 0 ns per
 * unit for a lane without a limit).
 */
export class QosLimiter {
  /** TAT per lane, ns of CLOCK_MONOTONIC (shared with the native threads). */
  readonly tat: BigInt64Array;
  /** Per lane: ns per unit, then burst tolerance in ns. */
  readonly params: Float64Array;

  constructor(readonly limits: QosLimits) {
    this.tat = new BigInt64Array(new SharedArrayBuffer(8 * QOS_LANES.length));
    this.params = new Float64Array(2 * QOS_LANES.length);
    QOS_LANES.forEach((lane, i) => {
      const rate = limits.rates[lane];
      if (!rate) return;
      const perUnit = 1e9 / rate;
      this.params[2 * i] = perUnit;
      this.params[2 * i + 1] = Math.max(0, (limits.bursts[lane] ?? 0) - 1) * perUnit;
    });
  }

  /**
   * How long a request must wait, in ms, having taken its place: a READ
   * (`write` false) or a write of `bytes` payload (WRITE_ZEROES and TRIM cost
   * one operation and no bytes).
   */
  admit(write: boolean, bytes: number): number {
    const ops = this.limits.sizeIops > 0 ? Math.max(1, Math.ceil(bytes / this.limits.sizeIops)) : 1;
    const costs = [ops, write ? 0 : ops, write ? ops : 0, bytes, write ? 0 : bytes, write ? bytes : 0];
    const now = monotonicNs();
    // The latest start any lane allows ...
    let start = now;
    QOS_LANES.forEach((_, i) => {
      if (!this.params[2 * i] || !costs[i]) return;
      const earliest = Atomics.load(this.tat, i) - BigInt(Math.round(this.params[2 * i + 1]!));
      if (earliest > start) start = earliest;
    });
    // ... then every lane moves past it (compare-and-swap: other connections and threads take places too).
    QOS_LANES.forEach((_, i) => {
      if (!this.params[2 * i] || !costs[i]) return;
      const step = BigInt(Math.round(costs[i]! * this.params[2 * i]!));
      for (;;) {
        const tat = Atomics.load(this.tat, i);
        const next = (tat > start ? tat : start) + step;
        if (Atomics.compareExchange(this.tat, i, tat, next) === tat) break;
      }
    });
    return Number(start - now) / 1e6;
  }
}

/** The limiters of the volumes a server exports, one per volume, replaced when its limits change. */
export class QosLimiters {
  private readonly byVolume = new Map<string, QosLimiter>();

  /** The limiter of `volume` under `limits` (undefined: none, and the volume's old one is dropped). */
  for(volume: string, limits: QosLimits | undefined): QosLimiter | undefined {
    const current = this.byVolume.get(volume);
    if (!limits) {
      this.byVolume.delete(volume);
      return undefined;
    }
    if (current && sameLimits(current.limits, limits)) return current;
    const next = new QosLimiter(limits);
    this.byVolume.set(volume, next);
    return next;
  }
}
