/**
 * The floor under bench/api.ts's POST latency: Fastify with one route that
 * answers a volume create at once (202 and a small body), nothing else. bench/api.ts
 * starts it and drives it with its own client, the same warm-up and
 * concurrency as Basalt, so the create p50 it prints for Basalt can be read
 * against what this machine gives any Node HTTP server with that client.
 *
 *   node --import tsx bench/api-floor.ts     # prints {"url": …} once listening
 */
import Fastify from 'fastify';

const app = Fastify();
let next = 0;
app.post('/v3/:project/volumes', async (req, reply) => {
  const { volume } = req.body as { volume: { size: number; name?: string } };
  reply.code(202);
  return { volume: { id: String(next++), size: volume.size, name: volume.name ?? null, status: 'creating' } };
});
const url = await app.listen({ host: '127.0.0.1', port: 0 });
console.log(JSON.stringify({ url }));
