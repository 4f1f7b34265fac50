/**
 * The project's event stream (issue 17 part 2): server-sent events of every
 * status change, resumed with `Last-Event-ID` after a disconnect and after a
 * restart of Basalt without missing or repeating an event; one project never
 * sees another's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const EXPERIMENTAL = { 'OpenStack-API-Experimental': 'true' };

interface Message { id: number; event: string; data: { id: number; resource_id: string; event: string; from_status: string | null; to_status: string | null } }

/** A server-sent events client over fetch: messages as they come, and a way to hang up. */
async function follow(s: TestServer, headers: Record<string, string> = {}, project = PROJECT): Promise<{ messages: Message[]; status: number; contentType: string | null; close(): void }> {
  const abort = new AbortController();
  const res = await fetch(`${s.url}/v3/${project}/events/stream`, { headers: { 'X-Auth-Token': `admin:${project}`, ...EXPERIMENTAL, ...headers }, signal: abort.signal });
  const messages: Message[] = [];
  if (res.ok && res.body) {
    void (async () => {
      const decoder = new TextDecoder();
      let text = '';
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          text += decoder.decode(chunk, { stream: true });
          let end: number;
          while ((end = text.indexOf('\n\n')) >= 0) {
            const frame = text.slice(0, end);
            text = text.slice(end + 2);
            const fields = Object.fromEntries(frame.split('\n').filter((l) => !l.startsWith(':') && l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trimStart()]));
            if (fields.data) messages.push({ id: Number(fields.id), event: fields.event!, data: JSON.parse(fields.data) });
          }
        }
      } catch { /* hung up */ }
    })();
  }
  return { messages, status: res.status, contentType: res.headers.get('content-type'), close: () => abort.abort() };
}

async function createVolume(s: TestServer, name: string): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name } });
  assert.equal(r.status, 202);
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id as string;
}

/** The (resource, event, to) of a message, to compare streams. */
const shape = (m: Message): string => `${m.data.resource_id}:${m.event}:${m.data.to_status}`;

test('the event stream resumes with Last-Event-ID across a disconnect and a restart, missing and repeating nothing', async (t) => {
  const s = await startTestServer(t);
  // Without the experimental header the stream does not exist.
  assert.equal((await fetch(`${s.url}${V}/events/stream`, { headers: { 'X-Auth-Token': `admin:${PROJECT}` } })).status, 404);

  const first = await follow(s);
  assert.equal(first.status, 200);
  assert.match(first.contentType!, /^text\/event-stream/);
  // An open stream is not a request in flight: the job workers' claims do not wait for it to end.
  // A request is, until answered.
  assert.equal(s.server.foreground.inFlight, 0);
  const counted = s.server.foreground.counted;
  const a = await createVolume(s, 'a');
  assert.ok(s.server.foreground.counted > counted, 'the POST (and the GETs polling it) counted');
  await waitFor('a created and available on the stream', async () => first.messages.some((m) => m.data.resource_id === a && m.data.to_status === 'available'));
  const seenFirst = [...first.messages];
  assert.deepEqual(seenFirst.filter((m) => m.data.resource_id === a).map((m) => m.data.to_status), ['creating', 'available']);
  first.close();

  // While nobody listens: more events.
  const b = await createVolume(s, 'b');
  assert.equal((await s.request('DELETE', `${V}/volumes/${a}`)).status, 202);
  await waitFor('a deleted', async () => (await s.request('GET', `${V}/volumes/${a}`)).status === 404);

  // Reconnect after the last event seen: exactly what was missed, in order.
  const lastSeen = seenFirst.at(-1)!.id;
  const second = await follow(s, { 'Last-Event-ID': String(lastSeen) });
  await waitFor('the missed events', async () => second.messages.some((m) => m.data.resource_id === a && m.event === 'volume.delete'));
  const missed = [...second.messages];
  assert.ok(missed.every((m) => m.id > lastSeen), 'nothing repeated');
  assert.deepEqual(missed.map((m) => m.id), [...missed.map((m) => m.id)].sort((x, y) => x - y), 'in order');
  assert.ok(missed.some((m) => m.data.resource_id === b && m.data.to_status === 'available'));
  assert.deepEqual(missed.filter((m) => m.data.resource_id === a).map((m) => m.event), ['volume.status', 'volume.delete'], 'a: deleting, then deleted');
  second.close();

  // The whole stream from the start equals what the two connections saw together: nothing missed.
  const all = await follow(s, { 'Last-Event-ID': '0' });
  await waitFor('the whole stream', async () => all.messages.length >= seenFirst.length + missed.length);
  assert.deepEqual(all.messages.map(shape), [...seenFirst, ...missed].map(shape));
  all.close();

  // Restart Basalt on the same state: the stream resumes after the same id.
  const lastBeforeRestart = missed.at(-1)!.id;
  const stateDir = s.stateDir;
  const connection = s.server.config.database.connection;
  await s.close();
  const s2 = await startTestServer(t, { stateDir, env: { BASALT_DATABASE__CONNECTION: connection } });
  const c = await createVolume(s2, 'c');
  const third = await follow(s2, { 'Last-Event-ID': String(lastBeforeRestart) });
  await waitFor('events after the restart', async () => third.messages.some((m) => m.data.resource_id === c && m.data.to_status === 'available'));
  assert.ok(third.messages.every((m) => m.id > lastBeforeRestart));
  assert.deepEqual(third.messages.map((m) => m.data.resource_id), [c, c], 'only what came after, once');
  third.close();

  // Another project sees none of this; a malformed Last-Event-ID is refused naming it.
  const other = await follow(s2, { 'Last-Event-ID': '0' }, 'someone-else');
  await createVolume(s2, 'd');
  await new Promise((r) => setTimeout(r, 600)); // two polls of the other project's stream: it must stay empty
  assert.deepEqual(other.messages, []);
  other.close();
  // timeout=0: what is there now, then the end (for scripts that poll).
  const polled = await fetch(`${s2.url}${V}/events/stream?timeout=0&last_event_id=${lastBeforeRestart}`, { headers: { 'X-Auth-Token': `admin:${PROJECT}`, ...EXPERIMENTAL } });
  const polledIds = [...(await polled.text()).matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  assert.deepEqual(polledIds.slice(0, third.messages.length), third.messages.map((m) => m.id), 'the same events, and it ended');
  assert.ok(polledIds.length > third.messages.length, 'with d\'s events after them');
  const bad = await fetch(`${s2.url}${V}/events/stream`, { headers: { 'X-Auth-Token': `admin:${PROJECT}`, ...EXPERIMENTAL, 'Last-Event-ID': 'yesterday' } });
  assert.equal(bad.status, 400);
  assert.match((await bad.json() as { badRequest: { message: string } }).badRequest.message, /Last-Event-ID must be the id of an event/);
});
