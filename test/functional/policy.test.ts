/**
 * The policy table (issue 6), walked endpoint by endpoint: each entry is
 * called as an admin, a member, a reader and a member of another project.
 * Whoever the rule lets in gets past the policy (any answer but 403); everyone
 * else gets 403 naming the policy; the other project's caller is refused as a
 * malformed URL. Ids are fresh UUIDs and bodies empty, so nothing is created.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { allows, POLICY } from '../../src/api/policy.ts';
import { PROJECT, startTestServer } from '../helpers/server.ts';

const PERSONAS = {
  admin: { 'X-Auth-Token': `boss:${PROJECT}`, 'X-Roles': 'admin' },
  member: { 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member' },
  reader: { 'X-Auth-Token': `rita:${PROJECT}`, 'X-Roles': 'reader' },
  foreign: { 'X-Auth-Token': `mallory:${'f'.repeat(32)}`, 'X-Roles': 'member' },
} as const;

test('every policy entry admits exactly the callers its rule names', async (t) => {
  // Every route the table names is served: the dashboard's too (experimental: asked for with the header below).
  const s = await startTestServer(t, { env: { BASALT_DASHBOARD_ENABLED: 'true' } });
  const counts: Record<string, number> = {};
  for (const entry of POLICY) {
    // Per-project routes name the caller's own project; every other id is fresh.
    const path = entry.path.replace(/:(project|target)\b/g, PROJECT).replace(/:[a-z_]+/g, () => randomUUID());
    // The event stream stays open until asked to end: timeout=0 answers what is there and ends.
    const query = entry.flag ? `?${entry.flag}=true` : entry.path === '/events/stream' ? '?timeout=0' : '';
    const body = entry.action ? { [entry.action]: {} } : entry.method === 'POST' || entry.method === 'PUT' ? {} : undefined;
    for (const [persona, headers] of Object.entries(PERSONAS)) {
      const r = await s.request(entry.method, `/v3/${PROJECT}${path}${query}`, body, { ...headers, 'OpenStack-API-Version': 'volume 3.70', 'OpenStack-API-Experimental': 'true' });
      const what = `${persona} ${entry.method} ${entry.path}${entry.action ? ` ${entry.action}` : ''}${query} (${entry.name}, ${entry.rule}): ${r.status} ${JSON.stringify(r.body)}`;
      if (persona === 'foreign') {
        assert.equal(r.status, 400, what);
        assert.match(JSON.stringify(r.body), /Malformed request URL/, what);
        continue;
      }
      const caller = { projectId: PROJECT, userId: persona, roles: [headers['X-Roles']], isAdmin: persona === 'admin', requestId: '' };
      if (allows(entry.rule, caller)) {
        assert.notEqual(r.status, 403, what);
        assert.notEqual(r.status, 401, what);
        assert.ok(r.status < 500, what);
      } else {
        assert.equal(r.status, 403, what);
        assert.equal(r.body.forbidden.message, `Policy doesn't allow ${entry.name} to be performed.`, what);
      }
      counts[`${persona}:${r.status === 403 ? 'refused' : 'let in'}`] = (counts[`${persona}:${r.status === 403 ? 'refused' : 'let in'}`] ?? 0) + 1;
    }
  }
  t.diagnostic(`${POLICY.length} entries; ${JSON.stringify(counts)}`);
  // The table is not trivially open or closed.
  assert.ok(counts['reader:refused']! > 20 && counts['reader:let in']! > 20);
  assert.ok(counts['member:refused']! > 20 && counts['member:let in']! > 30);
  assert.equal(counts['admin:refused'], undefined);
});

test('a reader reads but does not write; nobody, not even an admin, uses another project\'s URL', async (t) => {
  const s = await startTestServer(t);
  const created = await s.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1 } }, PERSONAS.member);
  assert.equal(created.status, 202);
  const id = created.body.volume.id as string;
  assert.equal((await s.request('GET', `/v3/${PROJECT}/volumes/${id}`, undefined, PERSONAS.reader)).status, 200);
  const refused = await s.request('DELETE', `/v3/${PROJECT}/volumes/${id}`, undefined, PERSONAS.reader);
  assert.equal(refused.status, 403);
  assert.equal(refused.body.forbidden.message, "Policy doesn't allow volume:delete to be performed.");
  // As in Cinder: the URL's project must be the token's (400), and an admin reaches
  // another project's volume through its own URL.
  const elsewhere = await s.request('GET', `/v3/${'e'.repeat(32)}/volumes/${id}`, undefined, PERSONAS.admin);
  assert.equal(elsewhere.status, 400);
  assert.match(elsewhere.body.badRequest.message, /Malformed request URL/);
  const other = 'a'.repeat(32);
  assert.equal((await s.request('GET', `/v3/${other}/volumes/${id}`, undefined, { 'X-Auth-Token': `boss:${other}`, 'X-Roles': 'admin' })).status, 200);
  assert.equal((await s.request('DELETE', `/v3/${PROJECT}/volumes/${id}?force=true`, undefined, PERSONAS.member)).status, 403);
});
