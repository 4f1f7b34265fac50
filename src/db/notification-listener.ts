/**
 * A PostgreSQL LISTEN session that outlives its connection. LISTEN holds a
 * session, so it needs a dedicated connection; when that connection is lost
 * (a database restart, a failover, an administrator's
 * `pg_terminate_backend`) the listener connects again with a capped,
 * jittered exponential back-off and listens again, for as long as it is not
 * stopped. Without this, wake-ups and fences would silently fall back to
 * polling and durable jobs after the first restart (issue 13, defect 11).
 *
 * Notifications sent while the session is down are lost (PostgreSQL keeps
 * none for an absent listener): what Basalt sends on a channel is only ever a
 * hint that a durable row already records (a job row for a wake-up, a fence
 * job for a deleted attachment), so the cost of a gap is latency, not loss.
 */
import pg from 'pg';

/** Where the listener reports a lost and a restored session (a pino logger fits). */
export interface ListenerLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** How a {@link listenWithReconnect} session reconnects. */
export interface ListenerOptions {
  /** Lost and restored sessions are logged here, once each. Default: not logged. */
  log?: ListenerLog;
  /** First delay before connecting again, in ms; it doubles on each failure. Default 100. */
  minDelayMs?: number;
  /** Longest delay between two attempts, in ms. Default 5000: a restarted database is heard within seconds. */
  maxDelayMs?: number;
  /** Called after each successful reconnect (notifications may have been missed meanwhile). */
  onResume?: () => void;
}

/** Quotes a channel name as an SQL identifier (LISTEN takes no parameters). */
function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Listens on `channel` of the database at `connection` and calls `fn` with
 * each notification's payload, reconnecting whenever the session is lost.
 * Returns a stop function that ends the session and any pending reconnect.
 * @throws the connection error when the first connection fails (a server
 *   that cannot reach its database at start should say so at once).
 */
export async function listenWithReconnect(
  connection: string, channel: string, fn: (payload: string) => void, options: ListenerOptions = {},
): Promise<() => Promise<void>> {
  const minDelayMs = options.minDelayMs ?? 100;
  const maxDelayMs = options.maxDelayMs ?? 5000;
  let stopped = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;

  /** One session: resolves once listening; `onLost` fires once when it ends. */
  const open = async (onLost: () => void): Promise<pg.Client> => {
    // keepAlive: a peer that vanished without a FIN (a failover, a cut cable) is noticed too.
    const c = new pg.Client({ connectionString: connection, keepAlive: true, application_name: `basalt-listen-${channel}` });
    // Armed once listening: a failed attempt is the caller's to report, not a lost session.
    let armed = false;
    const end = () => { if (armed) { armed = false; onLost(); } };
    c.on('error', end);
    c.on('end', end);
    c.on('notification', (n) => { if (n.channel === channel) fn(n.payload ?? ''); });
    try {
      await c.connect();
      await c.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
    armed = true;
    return c;
  };

  const sleep = (ms: number) => new Promise<void>((resolve) => {
    wake = resolve;
    timer = setTimeout(resolve, ms);
  });

  const reconnect = async (): Promise<void> => {
    if (stopped) return;
    client = undefined;
    options.log?.warn({ channel }, 'PostgreSQL notification session lost; reconnecting (wake-ups and fences wait for polling meanwhile)');
    const since = Date.now();
    for (let attempt = 1; !stopped; attempt++) {
      // Full jitter: many processes that lost the same database do not reconnect in step.
      await sleep(Math.random() * Math.min(maxDelayMs, minDelayMs * 2 ** (attempt - 1)));
      if (stopped) return;
      try {
        const c = await open(() => void reconnect());
        if (stopped) { await c.end().catch(() => undefined); return; }
        client = c;
        options.log?.info({ channel, attempts: attempt, downMs: Date.now() - since }, 'PostgreSQL notification session restored');
        options.onResume?.();
        return;
      } catch {
        // Still down: the next attempt waits longer, up to maxDelayMs.
      }
    }
  };

  client = await open(() => void reconnect());
  return async () => {
    stopped = true;
    clearTimeout(timer);
    wake?.();
    await client?.end().catch(() => undefined);
  };
}
