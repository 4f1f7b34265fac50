/**
 * The metadata sub-resources every resource with user metadata has (volumes,
 * snapshots): `GET/POST/PUT …/{id}/metadata` and `GET/PUT/DELETE …/{id}/metadata/{key}`.
 * POST merges, PUT replaces.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ownValue } from '../common/index.ts';
import type { ResourceRepository } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { metadataSchema } from './validation.ts';
import { body as bodyOf, validBody } from './body-declaration.ts';

const METADATA_BODY = { type: 'object', required: ['metadata'], properties: { metadata: metadataSchema } };
const META_BODY = { type: 'object', required: ['meta'], properties: { meta: { ...metadataSchema, minProperties: 1 } } };

/** How the routes find their resource. */
export interface MetadataRouteOptions {
  /** `/volumes`, `/snapshots`. */
  path: string;
  /** `Volume`, `Snapshot`: used in messages. */
  kind: string;
  repo: ResourceRepository<any, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Finds the resource for the caller or throws NotFoundError. */
  find(req: FastifyRequest, id: string): Promise<{ id: string }>;
}

/** Registers the metadata routes of one resource. */
export function metadataRoutes(app: FastifyInstance, deps: Pick<ApiDeps, 'db'>, o: MetadataRouteOptions): void {
  const { db } = deps;
  const all = async (id: string): Promise<Record<string, string>> => (await o.repo.metadataOf(db.kysely, [id])).get(id)!;
  const missing = (id: string, key: string) => new NotFoundError(`${o.kind} ${id} has no metadata with key ${key}.`);
  type Req = FastifyRequest<{ Params: { id: string; key: string } }>;

  app.get(`${o.path}/:id/metadata`, async (req: Req) => ({ metadata: await all((await o.find(req, req.params.id)).id) }));
  const writeAll = (replace: boolean) => async (req: Req) => {
    const body = validBody<{ metadata: Record<string, string> }>(req);
    const r = await o.find(req, req.params.id);
    await db.kysely.transaction().execute((tx) => replace ? o.repo.replaceMetadata(tx, r.id, body.metadata) : o.repo.addMetadata(tx, r.id, body.metadata));
    return { metadata: replace ? body.metadata : await all(r.id) };
  };
  app.post(`${o.path}/:id/metadata`, bodyOf(METADATA_BODY), writeAll(false));
  app.put(`${o.path}/:id/metadata`, bodyOf(METADATA_BODY), writeAll(true));
  app.get(`${o.path}/:id/metadata/:key`, async (req: Req) => {
    const r = await o.find(req, req.params.id);
    const md = await all(r.id);
    const value = ownValue(md, req.params.key);
    if (value === undefined) throw missing(r.id, req.params.key);
    return { meta: { [req.params.key]: value } };
  });
  app.put(`${o.path}/:id/metadata/:key`, bodyOf(META_BODY), async (req: Req) => {
    const body = validBody<{ meta: Record<string, string> }>(req);
    const keys = Object.keys(body.meta);
    if (keys.length > 1) throw new InvalidInputError('Request body contains too many items');
    if (keys[0] !== req.params.key) throw new InvalidInputError('Request body and URI mismatch');
    const r = await o.find(req, req.params.id);
    await o.repo.addMetadata(db.kysely, r.id, body.meta);
    return { meta: body.meta };
  });
  app.delete(`${o.path}/:id/metadata/:key`, async (req: Req, reply) => {
    const r = await o.find(req, req.params.id);
    if (!(await o.repo.deleteMetadataKey(db.kysely, r.id, req.params.key))) throw missing(r.id, req.params.key);
    return reply.code(200).send();
  });
}
