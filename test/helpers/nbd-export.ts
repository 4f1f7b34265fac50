/**
 * An NBD server over file-driver volumes for export tests, on one of the
 * ways a connection is served: native threads (plain TCP), the event loop
 * (plain TCP), TLS-PSK (always the event loop), or native threads over the
 * server's Unix domain socket.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import pino from 'pino';
import { FileDriver, GuardedDriver, type VolumeHandle } from '../../src/drivers/index.ts';
import { NbdServer, type NbdExport, type NbdServerOptions, type QosLimits } from '../../src/export/index.ts';
import { openExport, openSession, type ByteReader, type PskCredentials } from './nbd-raw.ts';
import type net from 'node:net';

/** How a connection is served. */
export type Plane = 'native' | 'event-loop' | 'tls' | 'unix';
export const PLANES: readonly Plane[] = ['native', 'event-loop', 'tls', 'unix'];

/** A running server and what tests need to reach its volumes. */
export interface NbdFixture {
  port: number;
  server: NbdServer;
  dir: string;
  /** Volume ids by export name. */
  ids: Map<string, string>;
  /** The volume file of an export. */
  file(name: string): string;
  /** Opens an export to the transmission phase, over TLS on the TLS plane. */
  connect(name: string): Promise<{ sock: net.Socket; reader: ByteReader; sizeBytes: bigint }>;
  /** Opens a session in option haggling (after STARTTLS with the export's key on the TLS plane). */
  session(name: string): Promise<{ sock: net.Socket; reader: ByteReader }>;
  /** Export names that stop resolving (as a deleted attachment's do). */
  removed: Set<string>;
  /** Gives an export the QoS limits its provider will name from now on (what a volume type's QoS specs set). */
  setQos(name: string, qos: QosLimits | undefined): void;
  /** The TLS-PSK credentials of an export on the TLS plane. */
  psk(name: string): PskCredentials | undefined;
  /** An NBD URI of an export for plain clients (qemu-io, nbdinfo): `nbd+unix://` on the Unix plane. */
  uri(name: string): string;
  /** The Unix socket's path on the Unix plane. */
  socketPath?: string;
}

/** Starts a server on port 0 over new sparse volumes in `dir` (a new temporary folder by default). */
export async function startNbd(t: Pick<TestContext, 'after'>, o: {
  plane: Plane; volumes: Array<{ name: string; sizeGiB: number }>; dir?: string;
  options?: Partial<Omit<NbdServerOptions, 'provider' | 'log'>>;
  /** Called at every look-up of an export; the look-up answers once it resolves (after `removed` is read). */
  holdFind?: () => Promise<void>;
  /** What a connection to an export opens instead of the volume (e.g. a mirror's view of it); undefined: the volume. */
  open?: (name: string, id: string) => Promise<VolumeHandle> | undefined;
}): Promise<NbdFixture> {
  let dir = o.dir;
  if (!dir) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-nbd-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    dir = tmp;
  }
  const driver = new GuardedDriver(new FileDriver({ poolName: 'p', directory: dir, totalCapacityGiB: 0 }), 60_000);
  await driver.init();
  const ids = new Map<string, string>();
  const exports = new Map<string, NbdExport>();
  const keys = new Map<string, Buffer>();
  const removed = new Set<string>();
  for (const v of o.volumes) {
    const id = randomUUID();
    ids.set(v.name, id);
    await driver.createVolume({ id, sizeGiB: v.sizeGiB });
    keys.set(`id-${v.name}`, randomBytes(32));
    exports.set(v.name, {
      name: v.name, key: id, pskIdentity: `id-${v.name}`, readOnly: false, canMultiConn: true,
      open: () => o.open?.(v.name, id) ?? driver.openVolume({ id, sizeGiB: v.sizeGiB }),
    });
  }
  const server = new NbdServer({
    provider: {
      find: async (n) => {
        const found = removed.has(n) ? undefined : exports.get(n);
        await o.holdFind?.();
        return found;
      },
      list: async () => [],
      refreshKeys: async () => undefined, pskKey: (i) => keys.get(i),
    },
    log: pino({ level: 'silent' }),
    dataPlane: o.plane === 'event-loop' ? 'event-loop' : 'native',
    ...o.options,
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  const socket = path.join(dir, 'nbd', 'nbd.sock');
  if (o.plane === 'unix') await server.listenUnix(socket);
  /** Where the plane's clients connect: the Unix socket's path, or the TCP loopback address. */
  const host = o.plane === 'unix' ? socket : '127.0.0.1';
  const psk = (name: string): PskCredentials | undefined => (o.plane === 'tls' ? { identity: `id-${name}`, key: keys.get(`id-${name}`)! } : undefined);
  return {
    port, server, dir, ids, removed, psk,
    setQos: (name, qos) => {
      const { qos: _old, ...rest } = exports.get(name)!;
      exports.set(name, { ...rest, ...(qos ? { qos } : {}) });
    },
    file: (name) => path.join(dir, `volume-${ids.get(name)}`),
    connect: (name) => openExport(host, port, name, psk(name)),
    session: (name) => openSession(host, port, psk(name)),
    ...(o.plane === 'unix' ? { socketPath: socket } : {}),
    uri: (name) => (o.plane === 'unix' ? `nbd+unix:///${name}?socket=${socket}` : `nbd://127.0.0.1:${port}/${name}`),
  };
}
