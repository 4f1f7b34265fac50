import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { BlobTable } from '../../../src/backup/blob-table.ts';

test('a blob table files numbers under hashes, keeps them through growth and finds them at any offset', () => {
  const table = new BlobTable(4); // grows many times on the way to 20,000
  const hashes = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => createHash('sha256').update(`block ${i}`).digest()));
  for (let n = 0; n < 20_000; n++) table.set(hashes, n * 32, n);
  assert.equal(table.size, 20_000);
  for (let n = 0; n < 20_000; n++) assert.equal(table.get(hashes, n * 32), n);
  // The same hash in another buffer, at offset 0: the same entry, and set replaces its number.
  const copy = Buffer.from(hashes.subarray(32 * 777, 32 * 778));
  assert.equal(table.get(copy), 777);
  table.set(copy, 0, 5);
  assert.equal(table.get(hashes, 32 * 777), 5);
  assert.equal(table.size, 20_000);
  assert.equal(table.get(randomBytes(32)), -1);
});

test('hashes that share their first bytes are told apart by the whole hash', () => {
  const table = new BlobTable();
  const a = randomBytes(32);
  const b = Buffer.from(a);
  b[31] = b[31]! ^ 1; // same first four bytes: the same slot, a different hash
  table.set(a, 0, 1);
  assert.equal(table.get(b), -1);
  table.set(b, 0, 2);
  assert.equal(table.get(a), 1);
  assert.equal(table.get(b), 2);
  assert.equal(table.size, 2);
});
