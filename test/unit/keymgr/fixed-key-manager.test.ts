/** The fixed-key manager: one configured key under Cinder's fixed id, the passphrase a compute host derives, its configuration. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { describeConfig, loadConfig } from '../../../src/config/index.ts';
import { ConfigError, InvalidInputError, NotFoundError } from '../../../src/errors/index.ts';
import { copyKey, FIXED_KEY_ID, FixedKeyManager, KeyManagerError, KeyNotFoundError, luksPassphrase, openKeyManager } from '../../../src/keymgr/index.ts';

const HEX = '00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff';
const ctx = { projectId: 'p' };

test('every key id is the fixed one, and every key the configured one', async () => {
  const keys = new FixedKeyManager(HEX);
  assert.equal(keys.hasKeyPerVolume, false);
  const id = await keys.createKey(ctx, { algorithm: 'aes', lengthBits: 256 });
  assert.equal(id, FIXED_KEY_ID);
  assert.equal(id, '00000000-0000-0000-0000-000000000000', 'the id Nova\'s fixed-key manager expects');
  const key = await keys.getKey(ctx, id);
  assert.deepEqual(key, { algorithm: 'AES', lengthBits: 256, bytes: Buffer.from(HEX, 'hex') });
  assert.equal(luksPassphrase(key), HEX.toLowerCase(), 'the passphrase is the key as lowercase hex');
  assert.equal(await copyKey(keys, ctx, id), FIXED_KEY_ID, 'a clone\'s copy of the key is the key');
  await keys.deleteKey(ctx, id);
  assert.deepEqual(await keys.getKey(ctx, id), key, 'deleting deletes nothing: every volume shares the key');
  await keys.deleteKey(ctx, 'not-a-key');
});

test('other ids and keys are refused; without a key nothing is made', async () => {
  const keys = new FixedKeyManager(HEX);
  await assert.rejects(keys.getKey(ctx, 'c0ffee00-0000-0000-0000-000000000000'), (e) => e instanceof KeyNotFoundError && e instanceof NotFoundError);
  await assert.rejects(keys.storeKey(ctx, { algorithm: 'AES', lengthBits: 128, bytes: Buffer.alloc(16, 1) }), KeyManagerError);
  const none = new FixedKeyManager('');
  await assert.rejects(none.createKey(ctx, { algorithm: 'aes', lengthBits: 256 }), (e) => e instanceof InvalidInputError && /Key manager error: no key is configured/.test(e.message));
  await assert.rejects(none.getKey(ctx, FIXED_KEY_ID), KeyManagerError);
  for (const bad of ['abc', 'zz', '0x00ff']) assert.throws(() => new FixedKeyManager(bad), ConfigError, bad);
});

test('[key_manager]: fixed_key from the file or the environment, masked by config show; Cinder\'s backend name is accepted', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-keymgr-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'basalt.conf');
  fs.writeFileSync(file, `[key_manager]\nbackend = cinder.keymgr.conf_key_mgr.ConfKeyManager\nfixed_key = ${HEX}\n`);
  const config = loadConfig({ configFile: file, env: {} });
  assert.equal(config.key_manager.fixed_key, HEX);
  assert.equal(openKeyManager(config.key_manager).name, 'fixed');
  assert.match(describeConfig(config), /^key_manager\.fixed_key = \*\*\*\* {2}# /m);
  assert.equal(loadConfig({ env: { BASALT_KEY_MANAGER__FIXED_KEY: 'abcd' } }).key_manager.fixed_key, 'abcd');
  assert.equal(loadConfig({ env: {} }).key_manager.fixed_key, '', 'no key by default');
  assert.throws(() => loadConfig({ env: { BASALT_KEY_MANAGER__BACKEND: 'barbican' } }), /backend/);
});
