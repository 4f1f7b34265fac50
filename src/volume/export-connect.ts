/**
 * Opening one of Basalt's own exports (`volume_exports`) from another
 * process: through the NBD export of a live volume service of the cluster
 * that serves it, with the export's TLS-PSK key. A move between processes
 * reads its source so; replication ships its points to the secondary copy so.
 */
import type { Clock } from '../common/index.ts';
import type { Db, ServiceRepository } from '../db/index.ts';
import { DriverError } from '../errors/index.ts';
import { NbdClient, type PlainConnection } from '../export/nbd-client.ts';
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
  const endpoints = await liveEndpoints(deps, cluster);
  let last: unknown;
  for (const e of endpoints) {
    const ways = [
      ...(local(deps, e) ? [{ socketPath: e.nbd_socket }] : []),
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

/**
 * A plain connection (no TLS, simple replies, handed over unread: see
 * {@link NbdClient.connectPlain}) to export `exportName` through the Unix
 * socket of a live volume service of `cluster` on this machine, for the
 * native data plane's mirror channels; undefined when no such service
 * answers (the export is then reached with TLS, on the event loop).
 */
export async function openLocalPlainExport(deps: ExportConnectDeps, cluster: string, exportName: string): Promise<PlainConnection | undefined> {
  for (const e of await liveEndpoints(deps, cluster)) {
    if (!local(deps, e)) continue;
    try {
      return await NbdClient.connectPlain({ host: e.nbd_host, port: e.nbd_port, socketPath: e.nbd_socket!, exportName });
    } catch {
      // another service of the cluster, if any
    }
  }
  return undefined;
}

/** The NBD endpoints of the live volume services of `cluster`. */
async function liveEndpoints(deps: ExportConnectDeps, cluster: string): Promise<NbdEndpoint[]> {
  const downMs = deps.queue.options.serviceDownMs ?? 60_000;
  const now = deps.clock.now();
  return reporting(await deps.services.list(deps.db.kysely))
    .filter(({ service }) => (service.cluster ?? service.host) === cluster && now - Date.parse(service.heartbeat_at) <= downMs)
    .flatMap(({ report }) => nbdEndpointOf(report) ?? []);
}

/** Whether a service reports a Unix socket on this machine (its host is this process's). */
function local(deps: ExportConnectDeps, e: NbdEndpoint): boolean {
  return Boolean(e.nbd_socket) && deps.host !== undefined && e.nbd_socket_host === deps.host;
}
