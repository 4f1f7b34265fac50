/**
 * Opening one of Basalt's own exports (`volume_exports`) from another
 * process: through the NBD export of a live volume service of the cluster
 * that serves it, with the export's TLS-PSK key. A move between processes
 * reads its source so; replication ships its points to the secondary copy so.
 */
import type { Clock } from '../common/index.ts';
import type { Db, ServiceRepository } from '../db/index.ts';
import { DriverError } from '../errors/index.ts';
import { NbdClient } from '../export/nbd-client.ts';
import type { JobQueue } from '../jobs/index.ts';
import { nbdEndpointOf, reporting, type NbdEndpoint } from '../services/index.ts';

/** What {@link openClusterExport} reads: the database, the service rows, the clock, the queue's `serviceDownMs` and this process's host. */
export interface ExportConnectDeps {
  db: Db;
  services: ServiceRepository;
  clock: Clock;
  queue: Pick<JobQueue, 'options'>;
  /** This process's node name (the `host` option): a process that reports a Unix socket for it is on this machine. */
  host?: string;
}

/**
 * Connects to export `exportName` through each live volume service of
 * `cluster` in turn until one answers. A service on this machine (its report
 * names this process's host beside its Unix socket) is tried through that
 * socket first: no TLS is asked there (the socket is Basalt's user's alone,
 * as for hosts on the machine), and its native data plane serves plain
 * connections, where TLS ones are served on its event loop. A socket that
 * does not answer (another user's, a stale path) falls back to TCP with the
 * export's TLS-PSK key.
 * @param what how errors name the export, e.g. `volume X for its move`.
 * @throws DriverError when the export's row is gone (`gone` says why), and (retryable) when no live service of the cluster answers.
 */
export async function openClusterExport(deps: ExportConnectDeps, cluster: string, exportName: string, what: string, gone: string): Promise<NbdClient> {
  const x = await deps.db.kysely.selectFrom('volume_exports').selectAll().where('export_name', '=', exportName).executeTakeFirst();
  if (!x) throw new DriverError(`The export of ${what} is gone (${gone}).`);
  const downMs = deps.queue.options.serviceDownMs ?? 60_000;
  const now = deps.clock.now();
  const endpoints = reporting(await deps.services.list(deps.db.kysely))
    .filter(({ service }) => (service.cluster ?? service.host) === cluster && now - Date.parse(service.heartbeat_at) <= downMs)
    .flatMap(({ report }) => nbdEndpointOf(report) ?? []);
  let last: unknown;
  const local = (e: NbdEndpoint) => e.nbd_socket && deps.host !== undefined && e.nbd_socket_host === deps.host;
  for (const e of endpoints) {
    const ways = [
      ...(local(e) ? [{ socketPath: e.nbd_socket }] : []),
      { psk: { identity: x.psk_identity, key: Buffer.from(x.psk_key, 'hex') } },
    ];
    for (const way of ways) {
      try {
        return await NbdClient.connect({ host: e.nbd_host, port: e.nbd_port, exportName: x.export_name, ...way });
      } catch (err) {
        last = err;
      }
    }
  }
  throw new DriverError(`No live process serving ${cluster} exports ${what}${last ? ` (${(last as Error).message})` : ''}.`, { retryable: true, cause: last });
}
