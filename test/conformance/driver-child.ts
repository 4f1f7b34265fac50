/**
 * Runs one driver call in a process of its own, so that the conformance
 * suite can kill it mid-way: the driver is made from its registration, as
 * the volume service makes it. Argument: JSON of {@link ChildJob}. Prints
 * `ready` once its driver is initialised (a kill meant for the call waits
 * for it) and `done` when the call returned.
 */
import { findDriver, GuardedDriver, type SnapshotRef, type VolumeRef } from '../../src/drivers/index.ts';

/** The call to make. */
export type ChildCall =
  | { method: 'createVolume'; vol: VolumeRef }
  | { method: 'cloneVolume'; vol: VolumeRef; source: VolumeRef }
  | { method: 'createVolumeFromSnapshot'; vol: VolumeRef; snap: SnapshotRef }
  | { method: 'createSnapshot'; snap: SnapshotRef }
  | { method: 'deleteSnapshot'; snap: SnapshotRef }
  | { method: 'deleteVolume'; vol: VolumeRef };

/** What to run: a call, on a driver made from its registration. */
export type ChildJob = { driver: string; backendName: string; options: Record<string, unknown> } & ChildCall;

const job = JSON.parse(process.argv[2]!) as ChildJob;
const registration = findDriver(job.driver);
if (!registration) throw new Error(`no driver ${job.driver}`);
const driver = new GuardedDriver(registration.create({ backendName: job.backendName, options: job.options }), 600_000);
await driver.init();
process.stdout.write('ready\n');
switch (job.method) {
  case 'createVolume': await driver.createVolume(job.vol); break;
  case 'cloneVolume': await driver.cloneVolume(job.vol, job.source); break;
  case 'createVolumeFromSnapshot': await driver.createVolumeFromSnapshot(job.vol, job.snap); break;
  case 'createSnapshot': await driver.createSnapshot(job.snap); break;
  case 'deleteSnapshot': await driver.deleteSnapshot(job.snap); break;
  case 'deleteVolume': await driver.deleteVolume(job.vol); break;
}
process.stdout.write('done\n');
