/** The memory test driver passes the conformance suite. */
import { MemoryDriver } from '../../src/drivers/index.ts';
import { driverConformance } from './driver-conformance.ts';

driverConformance('memory', async () => {
  const driver = new MemoryDriver({ poolName: 'mem' });
  return { driver, objects: async () => [...driver.volumes.keys(), ...driver.snapshots.keys()].sort() };
});
