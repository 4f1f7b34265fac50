/** The error catalogue and docs/errors.md must list the same codes with the same statuses. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ERROR_CATALOGUE } from '../../../src/errors/index.ts';

test('docs/errors.md matches the catalogue', () => {
  const doc = fs.readFileSync(path.resolve(import.meta.dirname, '../../../docs/errors.md'), 'utf8');
  const documented: Record<string, number> = {};
  for (const m of doc.matchAll(/^\| ([A-Z_]+) \| (\d{3}) \|/gm)) documented[m[1]!] = Number(m[2]);
  assert.deepEqual(documented, { ...ERROR_CATALOGUE });
});
