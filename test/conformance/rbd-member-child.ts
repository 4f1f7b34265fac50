/**
 * A cluster member in a process of its own, for the rbd blocklist recovery
 * test: the rbd driver (made from its registration with the options in
 * argv[2], JSON `{ options, vol, stateDirectory? }`) behind its guard, and an NBD server
 * exporting the volume as `v` on a free loopback port, printed as
 * `listening PORT`. It wires lost volumes as the volume service does: their
 * exports are dropped, and `lost ID…` is printed.
 */
import pino from 'pino';
import { GuardedDriver, rbdRegistration, type VolumeRef } from '../../src/drivers/index.ts';
import { NbdServer } from '../../src/export/index.ts';

const { options, vol, stateDirectory } = JSON.parse(process.argv[2]!) as { options: Record<string, unknown>; vol: VolumeRef; stateDirectory?: string };
const driver = new GuardedDriver(rbdRegistration.create({ backendName: 'ceph', options: options as never, ...(stateDirectory ? { stateDirectory } : {}) }), 600_000);
await driver.init();
const server = new NbdServer({
  provider: { find: async (name) => (name === 'v' ? { name, key: vol.id, readOnly: false, canMultiConn: true, open: () => driver.openVolume(vol) } : undefined), list: async () => [] },
  log: pino({ level: 'silent' }),
});
driver.watchLostVolumes((ids) => {
  void server.closeExport('v').then(() => process.stdout.write(`lost ${ids.join(' ')}\n`));
});
const { port } = await server.listen(0, '127.0.0.1');
process.stdout.write(`listening ${port}\n`);
