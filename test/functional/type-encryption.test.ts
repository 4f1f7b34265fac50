/**
 * Encrypted volume types through the API: the `/types/{id}/encryption` spec
 * (Cinder's shapes, validation and 404s; no change while volumes of the type
 * exist), and what a volume of an encrypted type gets: a key id, `encrypted:
 * true`, its encryption metadata, copies that keep it, refusals that keep
 * nothing half-created.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { FIXED_KEY_ID, KeyNotFoundError, type KeyManager, type KeyRequest, type SymmetricKey } from '../../src/keymgr/index.ts';
import { noauthCinder, noauthOpenstack } from '../helpers/openstack-clients.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MEMBER = { 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' };
const KEY_ENV = { BASALT_KEY_MANAGER__FIXED_KEY: '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff' };
const SPEC = { provider: 'luks', cipher: 'aes-xts-plain64', key_size: 256, control_location: 'front-end' };

async function createType(s: TestServer, name: string, extraSpecs: Record<string, string> = {}): Promise<string> {
  const r = await s.request('POST', `${V}/types`, { volume_type: { name, extra_specs: extraSpecs } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.volume_type.id;
}

async function encryptedType(s: TestServer, name: string, extraSpecs: Record<string, string> = {}): Promise<string> {
  const id = await createType(s, name, extraSpecs);
  const r = await s.request('POST', `${V}/types/${id}/encryption`, { encryption: SPEC });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return id;
}

async function availableVolume(s: TestServer, volume: Record<string, unknown>): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...volume } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return waitForStatus(s, r.body.volume.id, 'available');
}

test('type encryption: create, show, show an item, update, delete, in Cinder\'s shapes', async (t) => {
  const s = await startTestServer(t);
  const type = await createType(s, 'luks');
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption`)).body, {}, 'an unencrypted type shows an empty spec');
  const aliases = (await s.request('GET', `${V}/extensions`)).body.extensions.map((e: { alias: string }) => e.alias);
  assert.ok(aliases.includes('encryption') && aliases.includes('os-volume-encryption-metadata'), 'listed as Cinder lists them');

  const created = await s.request('POST', `${V}/types/${type}/encryption`, { encryption: { provider: 'LuksEncryptor', key_size: '256', cipher: 'aes-xts-plain64', control_location: 'front-end' } });
  assert.equal(created.status, 200);
  const encryptionId = created.body.encryption.encryption_id;
  assert.deepEqual(created.body, {
    encryption: { provider: 'LuksEncryptor', key_size: 256, cipher: 'aes-xts-plain64', control_location: 'front-end', volume_type_id: type, encryption_id: encryptionId },
  }, 'the create view echoes the spec (key size as a number) with the two ids, and nothing else');

  const shown = (await s.request('GET', `${V}/types/${type}/encryption`)).body;
  assert.deepEqual(Object.keys(shown).sort(), ['cipher', 'control_location', 'created_at', 'deleted', 'deleted_at', 'encryption_id', 'key_size', 'provider', 'updated_at', 'volume_type_id']);
  assert.equal(shown.key_size, 256);
  assert.equal(shown.deleted, false);
  assert.equal(shown.deleted_at, null);
  assert.match(shown.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption/provider`)).body, { provider: 'LuksEncryptor' });

  const again = await s.request('POST', `${V}/types/${type}/encryption`, { encryption: SPEC });
  assert.equal(again.status, 400);
  assert.equal(again.body.badRequest.message, `Volume type encryption for type ${type} already exists.`);

  // Tempest updates through `…/encryption/provider`: the last segment does not matter.
  const updated = await s.request('PUT', `${V}/types/${type}/encryption/provider`, { encryption: { key_size: 128, provider: 'SomeProvider', control_location: 'back-end' } });
  assert.equal(updated.status, 200);
  assert.deepEqual(updated.body, { encryption: { key_size: 128, provider: 'SomeProvider', control_location: 'back-end' } });
  const after = (await s.request('GET', `${V}/types/${type}/encryption`)).body;
  assert.deepEqual([after.provider, after.cipher, after.key_size, after.control_location, after.encryption_id], ['SomeProvider', 'aes-xts-plain64', 128, 'back-end', encryptionId]);
  assert.notEqual(after.updated_at, null);
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption/cipher`)).body, { cipher: 'aes-xts-plain64' });

  const del = await s.request('DELETE', `${V}/types/${type}/encryption/${encryptionId}`);
  assert.equal(del.status, 202);
  assert.equal(del.body, undefined);
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption`)).body, {});
  assert.equal((await s.request('DELETE', `${V}/types/${type}/encryption/provider`)).status, 404);

  // Deleting the type takes its spec along.
  await s.request('POST', `${V}/types/${type}/encryption`, { encryption: SPEC });
  assert.equal((await s.request('DELETE', `${V}/types/${type}`)).status, 202);
  assert.equal((await s.request('GET', `${V}/types/${type}/encryption`)).status, 404);
});

test('type encryption: validation errors name the field; unknown types and missing specs are 404s; admins only', async (t) => {
  const s = await startTestServer(t);
  const type = await createType(s, 'luks');
  const post = (encryption: unknown) => s.request('POST', `${V}/types/${type}/encryption`, { encryption });
  const refusals: Array<[unknown, RegExp]> = [
    [{ control_location: 'front-end' }, /'provider' is a required property/],
    [{ provider: 'luks' }, /'control_location' is a required property/],
    [{ ...SPEC, control_location: 'middle' }, /field\/attribute control_location.*is not one of \["front-end","back-end"\]/],
    [{ ...SPEC, key_size: 'big' }, /field\/attribute key_size\. Value: big\. key_size must be an integer\./],
    [{ ...SPEC, key_size: -1 }, /field\/attribute key_size.*less than the minimum of 0/],
    [{ ...SPEC, cipher: 'x'.repeat(256) }, /field\/attribute cipher.*is too long/],
    [{ ...SPEC, provider: 7 }, /field\/attribute provider.*is not of type/],
    [{ ...SPEC, volume_type_id: type }, /'volume_type_id' was unexpected/],
  ];
  for (const [body, message] of refusals) {
    const r = await post(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.body.badRequest.message, message, JSON.stringify(body));
  }
  assert.equal((await s.request('POST', `${V}/types/${type}/encryption`, { provider: 'luks' })).status, 400, 'the spec is wrapped in "encryption"');
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption`)).body, {}, 'nothing was stored');
  const nullable = await post({ provider: 'luks', control_location: 'back-end', cipher: null, key_size: null });
  assert.equal(nullable.status, 200, 'cipher and key size may be null');

  const missing = '6d6ec8ab-3f6a-4a3c-9f69-000000000000';
  for (const [method, path, body] of [
    ['GET', `/types/${missing}/encryption`, undefined],
    ['POST', `/types/${missing}/encryption`, { encryption: SPEC }],
    ['GET', `/types/${missing}/encryption/provider`, undefined],
    ['PUT', `/types/${missing}/encryption/provider`, { encryption: { key_size: 128 } }],
    ['DELETE', `/types/${missing}/encryption/provider`, undefined],
  ] as const) {
    const r = await s.request(method, `${V}${path}`, body);
    assert.equal(r.status, 404, `${method} ${path}`);
    assert.ok(r.body.itemNotFound, `${method} ${path}`);
  }
  const plain = await createType(s, 'plain');
  assert.equal((await s.request('GET', `${V}/types/${plain}/encryption/provider`)).body.itemNotFound.message, `Volume type encryption for type ${plain} does not exist.`);
  assert.equal((await s.request('PUT', `${V}/types/${plain}/encryption/provider`, { encryption: { key_size: 128 } })).status, 404);
  assert.equal((await s.request('GET', `${V}/types/${type}/encryption/no_such_item`)).status, 404);

  const asMember = await s.request('GET', `${V}/types/${type}/encryption`, undefined, MEMBER);
  assert.equal(asMember.status, 403);
  assert.equal(asMember.body.forbidden.message, "Policy doesn't allow volume_extension:volume_type_encryption:get to be performed.");
  assert.equal((await s.request('POST', `${V}/types/${plain}/encryption`, { encryption: SPEC }, MEMBER)).status, 403);
});

test('a volume of an encrypted type gets a key id and encrypted: true; the spec is frozen while it exists', async (t) => {
  const s = await startTestServer(t, { env: KEY_ENV });
  const type = await encryptedType(s, 'luks');
  const plainType = await createType(s, 'plain');
  const vol = await availableVolume(s, { volume_type: 'luks' });
  assert.equal(vol.encrypted, true);
  assert.equal((await availableVolume(s, { volume_type: 'plain' })).encrypted, false);
  assert.equal('encryption_key_id' in (await s.request('GET', `${V}/volumes/${vol.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.64' })).body.volume, false,
    'the fixed key\'s id is not shown (as in Cinder)');

  // What a compute host reads to find the key (a member of the project may).
  const meta = await s.request('GET', `${V}/volumes/${vol.id}/encryption`, undefined, MEMBER);
  assert.equal(meta.status, 200);
  assert.deepEqual(meta.body, { encryption_key_id: FIXED_KEY_ID, ...SPEC });
  assert.deepEqual((await s.request('GET', `${V}/volumes/${vol.id}/encryption/encryption_key_id`, undefined, MEMBER)).body, FIXED_KEY_ID);
  assert.equal((await s.request('GET', `${V}/volumes/${vol.id}/encryption/nothing`)).status, 404);
  const plainVol = (await s.request('GET', `${V}/volumes/detail`)).body.volumes.find((v: { volume_type: string }) => v.volume_type === 'plain');
  assert.deepEqual((await s.request('GET', `${V}/volumes/${plainVol.id}/encryption`)).body, { encryption_key_id: null });

  for (const [method, path, body, verb] of [
    ['PUT', `/types/${type}/encryption/provider`, { encryption: { key_size: 512 } }, 'update'],
    ['DELETE', `/types/${type}/encryption/provider`, undefined, 'delete'],
  ] as const) {
    const r = await s.request(method, `${V}${path}`, body);
    assert.equal(r.status, 400, `${method} ${path}`);
    assert.equal(r.body.badRequest.message, `Cannot ${verb} encryption specs. Volume type in use.`);
  }
  const r = await s.request('POST', `${V}/types/${plainType}/encryption`, { encryption: SPEC });
  assert.equal(r.status, 400);
  assert.equal(r.body.badRequest.message, 'Cannot create encryption specs. Volume type in use.');
  assert.equal((await s.request('GET', `${V}/types/${type}/encryption`)).body.key_size, 256, 'unchanged');

  // Once the volume is gone the spec may change again.
  assert.equal((await s.request('DELETE', `${V}/volumes/${vol.id}`)).status, 202);
  await waitFor('the volume to go', async () => (await s.request('GET', `${V}/volumes/${vol.id}`)).status === 404);
  assert.equal((await s.request('PUT', `${V}/types/${type}/encryption/provider`, { encryption: { key_size: 512 } })).status, 200);
});

test('clones and volumes from snapshots of an encrypted volume stay encrypted; copies across encryption are refused', async (t) => {
  const s = await startTestServer(t, { env: KEY_ENV });
  await encryptedType(s, 'luks');
  const other = await createType(s, 'luks-128');
  await s.request('POST', `${V}/types/${other}/encryption`, { encryption: { ...SPEC, key_size: 128 } });
  await createType(s, 'plain');
  const vol = await availableVolume(s, { volume_type: 'luks' });

  const clone = await availableVolume(s, { source_volid: vol.id });
  assert.equal(clone.encrypted, true);
  assert.equal(clone.volume_type, 'luks');
  assert.equal((await s.request('GET', `${V}/volumes/${clone.id}/encryption`)).body.encryption_key_id, FIXED_KEY_ID, 'the clone holds (a copy of) its source\'s key');

  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol.id } });
  await waitFor('the snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const fromSnap = await availableVolume(s, { snapshot_id: snap.body.snapshot.id });
  assert.equal(fromSnap.encrypted, true);

  for (const [source, volumeType, hint] of [
    [{ source_volid: vol.id }, 'plain', 'either match source volume, or omit type argument'],
    [{ source_volid: vol.id }, 'luks-128', 'either match source volume, or omit type argument'],
    [{ snapshot_id: snap.body.snapshot.id }, 'plain', 'recommend omitting the type argument'],
  ] as const) {
    const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, ...source, volume_type: volumeType } });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.badRequest.message, new RegExp(`Invalid volume_type provided: .*requested type is not compatible; ${hint}`));
  }
  const count = (await s.request('GET', `${V}/volumes`)).body.volumes.length;
  assert.equal(count, 3, 'refused copies left no rows');
});

test('encrypted volumes are refused, and nothing is created, without a key or with multiattach', async (t) => {
  const s = await startTestServer(t);
  await encryptedType(s, 'luks');
  const noKey = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'luks' } });
  assert.equal(noKey.status, 400);
  assert.match(noKey.body.badRequest.message, /Key manager error: no key is configured/);
  await encryptedType(s, 'shared', { multiattach: '<is> True' });
  const shared = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'shared' } });
  assert.equal(shared.status, 400);
  assert.match(shared.body.badRequest.message, /Multiattach cannot be used with encrypted volumes/);
  assert.deepEqual((await s.request('GET', `${V}/volumes`)).body.volumes, []);
  const usage = (await s.request('GET', `${V}/os-quota-sets/${PROJECT}?usage=true`)).body.quota_set;
  assert.equal(usage.volumes.in_use, 0, 'no quota was taken');
});

/** A key manager with a key per volume (what Barbican gives), kept in memory: the edge this test watches. */
class KeyStore implements KeyManager {
  readonly name = 'test-store';
  readonly hasKeyPerVolume = true;
  readonly keys = new Map<string, SymmetricKey>();
  async createKey(_ctx: unknown, r: KeyRequest): Promise<string> {
    const lengthBits = r.lengthBits ?? 256;
    return this.storeKey(_ctx, { algorithm: r.algorithm.toUpperCase(), lengthBits, bytes: randomBytes(lengthBits / 8) });
  }
  async storeKey(_ctx: unknown, key: SymmetricKey): Promise<string> {
    const id = randomUUID();
    this.keys.set(id, { ...key, bytes: Buffer.from(key.bytes) });
    return id;
  }
  async getKey(_ctx: unknown, id: string): Promise<SymmetricKey> {
    const k = this.keys.get(id);
    if (!k) throw new KeyNotFoundError(id);
    return k;
  }
  async deleteKey(_ctx: unknown, id: string): Promise<void> {
    this.keys.delete(id);
  }
}

test('with a key per volume: copies get their own copy of the key, and a deleted volume\'s key goes with it', async (t) => {
  const store = new KeyStore();
  const s = await startTestServer(t, { keyManager: store });
  await encryptedType(s, 'luks');
  const keyOf = async (id: string): Promise<string> => (await s.request('GET', `${V}/volumes/${id}/encryption`)).body.encryption_key_id;
  const gone = (id: string) => waitFor(`volume ${id} to go`, async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);

  const vol = await availableVolume(s, { volume_type: 'luks' });
  const key = await keyOf(vol.id);
  assert.deepEqual([...store.keys.keys()], [key]);
  assert.equal(store.keys.get(key)!.lengthBits, 256);
  assert.equal(store.keys.get(key)!.algorithm, 'AES', 'the algorithm is the cipher\'s first word');

  const clone = await availableVolume(s, { source_volid: vol.id });
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol.id } });
  await waitFor('the snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap.body.snapshot.id}`)).body.snapshot.status === 'available');
  const fromSnap = await availableVolume(s, { snapshot_id: snap.body.snapshot.id });
  const copies = [await keyOf(clone.id), await keyOf(fromSnap.id)];
  assert.equal(new Set([key, ...copies]).size, 3, 'no two volumes share a key id');
  for (const c of copies) assert.deepEqual(store.keys.get(c)!.bytes, store.keys.get(key)!.bytes, 'a copy holds the same key');

  assert.equal((await s.request('DELETE', `${V}/volumes/${clone.id}`)).status, 202);
  await gone(clone.id);
  assert.equal(store.keys.has(copies[0]!), false, 'the clone\'s key went with it');
  assert.equal(store.keys.has(key), true, 'its source\'s stayed');

  // A volume that never reached a backend is deleted by the API: its key too.
  await encryptedType(s, 'nowhere', { volume_backend_name: 'no-such-backend' });
  const stranded = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'nowhere' } });
  await waitForStatus(s, stranded.body.volume.id, 'error');
  const strandedKey = await keyOf(stranded.body.volume.id);
  assert.equal(store.keys.has(strandedKey), true);
  assert.equal((await s.request('DELETE', `${V}/volumes/${stranded.body.volume.id}`)).status, 202);
  await gone(stranded.body.volume.id);
  assert.equal(store.keys.has(strandedKey), false);

  assert.equal((await s.request('DELETE', `${V}/volumes/${vol.id}?cascade=true`)).status, 202);
  assert.equal((await s.request('DELETE', `${V}/volumes/${fromSnap.id}`)).status, 202);
  await gone(vol.id);
  await gone(fromSnap.id);
  assert.deepEqual([...store.keys.keys()], [], 'no key outlives its volume');
});

test('python3-openstackclient: a type created with an encryption spec, shown with it', async (t) => {
  const s = await startTestServer(t);
  const openstack = (...args: string[]): Promise<string> => noauthOpenstack(s, PROJECT, '--os-volume-api-version', '3', ...args);
  await openstack('volume', 'type', 'create', '--encryption-provider', 'luks', '--encryption-cipher', 'aes-xts-plain64',
    '--encryption-key-size', '256', '--encryption-control-location', 'front-end', 'LUKS');
  const shown = JSON.parse(await openstack('volume', 'type', 'show', '--encryption-type', 'LUKS', '-f', 'json')) as { encryption: Record<string, unknown> };
  assert.deepEqual([shown.encryption.provider, shown.encryption.cipher, shown.encryption.key_size, shown.encryption.control_location], ['luks', 'aes-xts-plain64', 256, 'front-end']);
});

test('python3-cinderclient: encryption-type-create, -show, -update, -delete, -list', async (t) => {
  const s = await startTestServer(t);
  const cinder = (...args: string[]): Promise<string> => noauthCinder(s, PROJECT, ...args);
  const type = await createType(s, 'luks');
  const created = await cinder('encryption-type-create', '--cipher', 'aes-xts-plain64', '--key-size', '256', '--control-location', 'front-end', 'luks', 'luks');
  assert.match(created, new RegExp(`\\| ${type} \\| luks .*\\| aes-xts-plain64 .*\\| 256 .*\\| front-end`));
  assert.match(await cinder('encryption-type-show', 'luks'), /aes-xts-plain64/);
  assert.match(await cinder('encryption-type-list'), new RegExp(`${type}.*luks`));
  await cinder('encryption-type-update', '--key-size', '512', 'luks');
  assert.equal((await s.request('GET', `${V}/types/${type}/encryption`)).body.key_size, 512);
  await cinder('encryption-type-delete', 'luks');
  assert.deepEqual((await s.request('GET', `${V}/types/${type}/encryption`)).body, {});
});

test('os-retype keeps how a volume is encrypted: to a type with the same spec only', async (t) => {
  const s = await startTestServer(t, { env: KEY_ENV });
  await encryptedType(s, 'luks');
  await encryptedType(s, 'luks-too');
  const other = await createType(s, 'luks-128');
  await s.request('POST', `${V}/types/${other}/encryption`, { encryption: { ...SPEC, key_size: 128 } });
  await createType(s, 'plain');
  const vol = await availableVolume(s, { volume_type: 'luks' });
  const plainVol = await availableVolume(s, { volume_type: 'plain' });
  const retype = (id: string, type: string) => s.request('POST', `${V}/volumes/${id}/action`, { 'os-retype': { new_type: type } });
  for (const [id, type] of [[vol.id, 'plain'], [vol.id, 'luks-128'], [plainVol.id, 'luks']] as const) {
    const r = await retype(id, type);
    assert.equal(r.status, 400, `${type}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.badRequest.message, new RegExp(`volume type ${type} encrypts volumes differently from the volume's type`));
  }
  assert.equal((await retype(vol.id, 'luks-too')).status, 202);
  const after = (await s.request('GET', `${V}/volumes/${vol.id}`)).body.volume;
  assert.deepEqual([after.volume_type, after.encrypted], ['luks-too', true]);
  assert.equal((await s.request('GET', `${V}/volumes/${vol.id}/encryption`)).body.encryption_key_id, FIXED_KEY_ID, 'the key stays');
});
