/** `pool_usage` (migration 0026) on SQLite: see pool-usage-cases.ts. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../../src/db/index.ts';
import { poolUsageCases } from './pool-usage-cases.ts';

poolUsageCases('sqlite', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-pool-usage-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return openDatabase(`sqlite://${path.join(dir, 'basalt.sqlite')}`);
});
