/**
 * What each volume's NBD export has served (issue 18, part 3): requests,
 * payload bytes and the time from a request read to its reply sent, by
 * operation — on both data planes. The event loop counts its requests as it
 * answers them; native connections count in their threads (relaxed atomics)
 * and are read when asked, and folded into the totals when they end, so a
 * total never goes back.
 */

/** The operations counted, in the native data plane's order (nbd_dataplane.c OP_*). */
export const NBD_OPS = ['read', 'write', 'flush', 'trim', 'zero', 'other'] as const;
export type NbdOp = typeof NBD_OPS[number];

/** One operation's totals. */
export interface OpTotals { count: number; bytes: number; seconds: number }

/** A live native connection: its counters as `[count, bytes, nanoseconds]` per operation. */
type Live = () => number[];

/** Totals per volume (the export's key) and operation. */
export class NbdStats {
  private readonly totals = new Map<string, Map<NbdOp, OpTotals>>();
  private readonly live = new Map<Live, string>();

  /** Counts one request the event loop answered. */
  record(volume: string, op: NbdOp, bytes: number, seconds: number): void {
    const t = this.of(volume, op);
    t.count++;
    t.bytes += bytes;
    t.seconds += seconds;
  }

  /** Follows a native connection's counters until {@link retire}. */
  watch(volume: string, counters: Live): void {
    this.live.set(counters, volume);
  }

  /** Adds an ended native connection's last counters to the totals. */
  retire(counters: Live): void {
    const volume = this.live.get(counters);
    if (volume === undefined) return;
    this.live.delete(counters);
    this.add(volume, counters());
  }

  /** Every volume's totals now: ended connections and live ones. */
  snapshot(): Array<{ volume: string; op: NbdOp } & OpTotals> {
    const sum = new NbdStats();
    for (const [volume, ops] of this.totals) {
      for (const [op, t] of ops) {
        const s = sum.of(volume, op);
        s.count += t.count;
        s.bytes += t.bytes;
        s.seconds += t.seconds;
      }
    }
    for (const [counters, volume] of this.live) sum.add(volume, counters());
    return [...sum.totals].flatMap(([volume, ops]) => [...ops].map(([op, t]) => ({ volume, op, ...t })));
  }

  private add(volume: string, raw: number[]): void {
    NBD_OPS.forEach((op, i) => {
      const [count = 0, bytes = 0, ns = 0] = raw.slice(i * 3, i * 3 + 3);
      if (count === 0) return;
      const t = this.of(volume, op);
      t.count += count;
      t.bytes += bytes;
      t.seconds += ns / 1e9;
    });
  }

  private of(volume: string, op: NbdOp): OpTotals {
    let ops = this.totals.get(volume);
    if (!ops) this.totals.set(volume, (ops = new Map()));
    let t = ops.get(op);
    if (!t) ops.set(op, (t = { count: 0, bytes: 0, seconds: 0 }));
    return t;
  }
}

/** The operation an NBD command type counts as. */
export function opOf(type: number): NbdOp {
  switch (type) {
    case 0: return 'read';
    case 1: return 'write';
    case 3: return 'flush';
    case 4: return 'trim';
    case 6: return 'zero';
    default: return 'other';
  }
}
