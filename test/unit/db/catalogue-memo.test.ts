/** The catalogue memo (migration 0027) on SQLite: see catalogue-memo-cases.ts. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from '../../../src/db/index.ts';
import { catalogueMemoCases } from './catalogue-memo-cases.ts';

catalogueMemoCases('sqlite', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-catalogue-memo-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return openDatabase(`sqlite://${path.join(dir, 'basalt.sqlite')}`);
});
