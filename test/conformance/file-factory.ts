/** The conformance factory of the file driver over a folder made by `makeDir`. */
import fs from 'node:fs';
import type { TestContext } from 'node:test';
import { fileRegistration } from '../../src/drivers/index.ts';
import type { DriverFactory } from './driver-conformance.ts';

export function fileDriverFactory(makeDir: () => string): DriverFactory {
  return async (t: TestContext) => {
    const dir = makeDir();
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const options = { file_volume_dir: dir, total_capacity_gb: 0 };
    return {
      driver: fileRegistration.create({ backendName: 'file', options }),
      objects: async () => fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort(),
      // Killed at its first fsync: after it wrote, before anything it made is durable or published.
      inChild: { driver: fileRegistration.name, backendName: 'file', options, killAtSyscalls: ['fsync', 'fdatasync'] },
    };
  };
}
