/** The conformance factory of the file driver over a folder made by `makeDir`. */
import fs from 'node:fs';
import type { TestContext } from 'node:test';
import { FileDriver, type VolumeDriver } from '../../src/drivers/index.ts';
import type { DriverFactory } from './driver-conformance.ts';

export function fileDriverFactory(makeDir: () => string): DriverFactory {
  return async (t: TestContext, o) => {
    const dir = makeDir();
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = new FileDriver({ poolName: 'file', directory: dir, totalCapacityGiB: 0 });
    let driver: VolumeDriver = file;
    if (o.supportsRevertToSnapshot === false) {
      // The same driver declaring less: the guard must refuse what is not declared.
      driver = Object.assign(Object.create(file) as FileDriver, {
        capabilities: { ...file.capabilities, supportsRevertToSnapshot: false },
        revertToSnapshot: undefined,
      });
    }
    return { driver, objects: async () => fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort() };
  };
}
