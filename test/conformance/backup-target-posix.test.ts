/** The posix backup target passes the backup target conformance suite, on real files. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PosixTarget } from '../../src/backup/index.ts';
import { backupTargetConformance } from './backup-target-conformance.ts';

backupTargetConformance('posix', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-target-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return new PosixTarget(path.join(dir, 'backups'));
});
