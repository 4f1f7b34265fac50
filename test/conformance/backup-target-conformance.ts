/**
 * The backup target conformance suite: one function that takes a factory of
 * fresh, empty targets and tests the contract's behaviour (src/backup/backup-target.ts).
 * Every target passes it: posix in backup-target-posix.test.ts, s3 (on Ceph's
 * radosgw) in backup-target-s3.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import type { BackupTarget } from '../../src/backup/index.ts';
import { DriverError } from '../../src/errors/index.ts';

/** Makes a fresh, empty target for one test; clean up with `t.after`. */
export type TargetFactory = (t: TestContext) => Promise<BackupTarget>;

/** Registers the suite's tests for one kind of target. */
export function backupTargetConformance(name: string, make: TargetFactory, options: {
  /** Makes a target of the same kind that cannot be reached (the store down, the folder gone). */
  unreachable?: (t: TestContext) => Promise<BackupTarget>;
} = {}): void {
  test(`${name}: an object reads back as stored, byte for byte; a missing one is undefined`, async (t) => {
    const target = await make(t);
    const big = randomBytes(3 * 1024 * 1024 + 17);
    await target.put('volumes/v1/chunks/ab/abc', big);
    await target.put('volumes/v1/manifests/b1.json', Buffer.from('{}'));
    await target.put('empty', Buffer.alloc(0));
    assert.ok((await target.get('volumes/v1/chunks/ab/abc'))!.equals(big));
    assert.equal((await target.get('empty'))!.length, 0);
    assert.equal(await target.get('volumes/v1/chunks/ab/nothing'), undefined);
    assert.equal(await target.has('volumes/v1/chunks/ab/abc'), true);
    assert.equal(await target.has('volumes/v1/chunks/ab/nothing'), false);
  });

  test(`${name}: storing a key again replaces it; removing is idempotent`, async (t) => {
    const target = await make(t);
    await target.put('k/one', Buffer.from('first'));
    await target.put('k/one', Buffer.from('second'));
    assert.equal((await target.get('k/one'))!.toString(), 'second');
    await target.delete('k/one');
    await target.delete('k/one');
    await target.delete('never/was');
    assert.equal(await target.has('k/one'), false);
  });

  test(`${name}: list gives every key under a prefix, and only those`, async (t) => {
    const target = await make(t);
    const keys = ['volumes/a/chunks/00/1', 'volumes/a/chunks/ff/2', 'volumes/a/manifests/x.json', 'volumes/ab/chunks/00/3', 'other'];
    await Promise.all(keys.map((k) => target.put(k, Buffer.from(k))));
    assert.deepEqual((await target.list('volumes/a/')).sort(), keys.slice(0, 3).sort());
    assert.deepEqual((await target.list('volumes/a/chunks/')).sort(), keys.slice(0, 2).sort());
    assert.deepEqual(await target.list('volumes/none/'), []);
  });

  test(`${name}: concurrent stores of the same key leave one whole object`, async (t) => {
    const target = await make(t);
    const body = randomBytes(1024 * 1024);
    await Promise.all(Array.from({ length: 8 }, () => target.put('same/key', body)));
    assert.ok((await target.get('same/key'))!.equals(body));
    assert.deepEqual(await target.list('same/'), ['same/key']);
  });

  if (options.unreachable) {
    test(`${name}: a target that cannot be reached fails with a retryable driver error naming it`, async (t) => {
      const target = await options.unreachable!(t);
      await assert.rejects(target.put('k', Buffer.from('x')), (err: unknown) => err instanceof DriverError && err.retryable && err.message.includes(target.location));
    });
  }
}
