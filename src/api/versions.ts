/** Version discovery: `GET /` (300, every version) and `GET /v3/` (200). */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MAX_VERSION, MIN_VERSION } from './microversion.ts';
import { baseUrl } from './context.ts';

function document(req: FastifyRequest) {
  return {
    versions: [{
      id: 'v3.0',
      status: 'CURRENT',
      version: MAX_VERSION,
      min_version: MIN_VERSION,
      updated: '2022-08-31T00:00:00Z',
      links: [
        { rel: 'describedby', type: 'text/html', href: 'https://docs.openstack.org/' },
        { rel: 'self', href: `${baseUrl(req)}/v3/` },
      ],
      'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
    }],
  };
}

/** Registers the version documents. */
export async function versionRoutes(app: FastifyInstance): Promise<void> {
  app.get('/', async (req, reply) => reply.code(300).send(document(req)));
  app.get('/v3', async (req) => document(req));
}
