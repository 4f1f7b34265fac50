/**
 * Issue 13, defect 7: on a full filesystem an NBD WRITE or WRITE_ZEROES
 * answers ENOSPC on every plane (it was EIO over TLS): QEMU pauses a guest on
 * ENOSPC but passes EIO through as a disk error.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { simpleRequest } from '../helpers/nbd-raw.ts';

const MiB = 1024 * 1024;
const ENOSPC = 28;
const CMD_WRITE = 1;
const CMD_WRITE_ZEROES = 6;
const FLAG_NO_HOLE = 2;

/** A 2 MiB tmpfs, unmounted after the test. */
function smallFilesystem(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
  t.after(() => {
    execFileSync('umount', ['-l', dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

for (const plane of PLANES) describe(`${plane} plane`, () => {
  test('issue 13: writes and write-zeroes on a full filesystem answer ENOSPC', async (t) => {
    const s = await startNbd(t, { plane, dir: smallFilesystem(t), volumes: [{ name: 'full', sizeGiB: 1 }] });
    const c = await s.connect('full');
    t.after(() => c.sock.destroy());
    const errors: number[] = [];
    for (let i = 0; i < 4; i++) errors.push((await simpleRequest(c, CMD_WRITE, BigInt(i * 64 * MiB), MiB, Buffer.alloc(MiB, 0x5a))).error);
    assert.ok(errors.includes(ENOSPC), `a write found the filesystem full: ${errors.join(', ')}`);
    assert.deepEqual(errors.filter((e) => e !== 0 && e !== ENOSPC), [], 'no other error');
    const zeroes = await simpleRequest(c, CMD_WRITE_ZEROES, BigInt(512 * MiB), 8 * MiB, undefined, FLAG_NO_HOLE);
    assert.equal(zeroes.error, ENOSPC, 'write-zeroes that must allocate answers ENOSPC');
    // The connection still serves: a read answers.
    assert.equal((await simpleRequest(c, 0, 0n, 4096)).error, 0);
  });
});
