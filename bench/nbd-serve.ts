/**
 * Serves one file-driver volume over Basalt's NBD server, for benchmarks:
 *   node --import tsx bench/nbd-serve.ts DIR VOLUME_ID SIZE_GIB PORT [SOCKET]
 * (serves DIR/volume-VOLUME_ID as export `bench` on 127.0.0.1:PORT, and on the
 * Unix socket SOCKET when given, until killed).
 * NBD_POLL_US and NBD_THREADS set the data plane's polling bound and threads per connection,
 * NBD_SPLICE_MIN the smallest READ it splices (0: copy every READ), NBD_SPLICE_TCP=1 splicing on TCP too,
 * NBD_SPLICE_WRITE_MIN the smallest WRITE payload it splices (0: copy every WRITE), NBD_QOS a volume type's QoS
 * specs as JSON (e.g. {"total_iops_sec":"5000"}) that limit the export.
 * NBD_RBD, the rbd driver's options as JSON (Cinder's names: rbd_pool, rbd_user, rbd_ceph_conf,
 * rbd_keyring_conf), serves the RBD image volume-VOLUME_ID of that pool instead (DIR is unused).
 */
import pino from 'pino';
import { FileDriver, GuardedDriver, type VolumeDriver } from '../src/drivers/index.ts';
import { NbdServer, qosLimits } from '../src/export/index.ts';
import { benchRbdDriver } from './rbd-bench-driver.ts';

const [dir, id, sizeGiB, port, socket] = process.argv.slice(2);
if (!dir || !id || !sizeGiB || !port) {
  console.error('usage: nbd-serve.ts DIR VOLUME_ID SIZE_GIB PORT');
  process.exit(2);
}
const qos = process.env.NBD_QOS ? qosLimits(JSON.parse(process.env.NBD_QOS) as Record<string, string>, Number(sizeGiB)) : undefined;
const inner: VolumeDriver = process.env.NBD_RBD
  ? benchRbdDriver(JSON.parse(process.env.NBD_RBD) as Record<string, unknown>)
  : new FileDriver({ poolName: 'bench', directory: dir, totalCapacityGiB: 0 });
const driver = new GuardedDriver(inner, 600_000);
await driver.init();
const server = new NbdServer({
  provider: {
    // As an attachment's export (server/attachment-exports.ts): multi-conn when the driver's handles are coherent.
    find: async (name) => name === 'bench'
      ? { name, key: id, readOnly: false, canMultiConn: driver.capabilities.canMultiConn, ...(qos ? { qos } : {}), open: () => driver.openVolume({ id, sizeGiB: Number(sizeGiB) }) }
      : undefined,
    list: async () => [],
  },
  log: pino({ level: 'warn' }),
  pollMicros: process.env.NBD_POLL_US ? Number(process.env.NBD_POLL_US) : undefined,
  threadsPerConnection: process.env.NBD_THREADS ? Number(process.env.NBD_THREADS) : undefined,
  spliceMinBytes: process.env.NBD_SPLICE_MIN ? Number(process.env.NBD_SPLICE_MIN) : undefined,
  spliceOverTcp: process.env.NBD_SPLICE_TCP === '1',
  spliceWriteMinBytes: process.env.NBD_SPLICE_WRITE_MIN ? Number(process.env.NBD_SPLICE_WRITE_MIN) : undefined,
});
const address = await server.listen(Number(port), '127.0.0.1');
if (socket) await server.listenUnix(socket);
console.log(`listening ${address.port}`);
// Exit cleanly on a signal, so that --cpu-prof can write its profile.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { void server.close().finally(() => process.exit(0)); });
}
