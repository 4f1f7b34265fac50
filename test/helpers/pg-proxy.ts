/**
 * A TCP relay in front of PostgreSQL (or etcd: it relays any TCP) for fault tests: one process reaches the
 * database through it, and the test cuts that process off (a network
 * partition: every byte held, nothing lost, until healed) or silences its
 * notification sessions (a LISTEN session that misses what is sent).
 */
import net from 'node:net';

/** One relayed connection. */
interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** The client's first bytes (the startup message, with `application_name`). */
  startup: string;
  /** Bytes from the server are dropped (never reach the client). */
  muted: boolean;
}

/** A running relay. */
export interface PgProxy {
  /** The relay's loopback port (for a TCP service other than PostgreSQL, e.g. etcd). */
  readonly port: number;
  /** `postgresql://postgres@127.0.0.1:PORT/<database>` of a database URL on the real server. */
  url(databaseUrl: string): string;
  /**
   * From now on, drops what the server sends on the connections whose
   * startup message names `applicationName` (e.g. `basalt-listen-basalt_fence`):
   * their notifications never arrive, while the sessions look alive.
   */
  mute(applicationName: string): void;
  /** Holds every byte both ways, on open connections and new ones, until {@link heal}. */
  partition(): void;
  heal(): void;
  close(): Promise<void>;
}

/** Starts a relay on a free loopback port to PostgreSQL at `upstreamPort`. */
export async function startPgProxy(upstreamPort: number): Promise<PgProxy> {
  const pairs = new Set<Pair>();
  let partitioned = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    const pair: Pair = { client, upstream, startup: '', muted: false };
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => {
      if (pair.startup === '') pair.startup = chunk.toString('latin1');
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!pair.muted) client.write(chunk);
    });
    if (partitioned) {
      client.pause();
      upstream.pause();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    url(databaseUrl) {
      const u = new URL(databaseUrl);
      u.port = String(port);
      return u.toString();
    },
    mute(applicationName) {
      for (const p of pairs) if (p.startup.includes(`${applicationName}\0`)) p.muted = true;
    },
    partition() {
      partitioned = true;
      for (const p of pairs) { p.client.pause(); p.upstream.pause(); }
    },
    heal() {
      partitioned = false;
      for (const p of pairs) { p.client.resume(); p.upstream.resume(); }
    },
    async close() {
      for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
