/**
 * Block metadata for backup tools (issue 17 part 4), an experimental API in
 * the shape of CSI's SnapshotMetadata service (`docs/block-metadata.md`):
 *
 * - `GET /snapshots/{id}/allocated-extents` — GetMetadataAllocated;
 * - `GET /snapshots/{id}/changed-extents?base_snapshot_id=` and
 *   `GET /volumes/{id}/changed-extents?base_snapshot_id=` — GetMetadataDelta;
 *
 * each paged by `starting_offset` (bytes) and `max_results`.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { InvalidInputError } from '../errors/index.ts';
import type { BlockMetadata, PageRequest } from '../volume/index.ts';
import type { ApiDeps } from './context.ts';
import { EXPERIMENTAL } from './experimental.ts';
import { queryValue } from './pagination.ts';

/** Extents in a page when the request does not say. */
const DEFAULT_MAX_RESULTS = 1000;

/** A non-negative integer query parameter, or `fallback` when absent. @throws InvalidInputError naming it. */
function count(q: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const text = queryValue(q, name);
  if (text === undefined) return fallback;
  const n = /^\d{1,16}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidInputError(`Invalid input received: ${name} must be an integer of at least ${min}, not '${text}'.`);
  return n;
}

/** The page a request asks for. */
function pageOf(req: FastifyRequest, maxLimit: number): PageRequest {
  const q = req.query as Record<string, unknown>;
  return { startingOffset: count(q, 'starting_offset', 0, 0), maxResults: Math.min(count(q, 'max_results', DEFAULT_MAX_RESULTS, 1), maxLimit) };
}

/** The base snapshot a delta request names. @throws InvalidInputError when absent. */
function baseOf(req: FastifyRequest): string {
  const base = queryValue(req.query as Record<string, unknown>, 'base_snapshot_id');
  if (!base) throw new InvalidInputError('Invalid input received: base_snapshot_id is required (the earlier snapshot to compare with).');
  return base;
}

/** Registers the routes; without a block metadata service (no volume role here) they are not served. */
export function blockMetadataRoutes(deps: ApiDeps) {
  const maxLimit = deps.config.DEFAULT.osapi_max_limit;
  return async (app: FastifyInstance): Promise<void> => {
    const service: BlockMetadata | undefined = deps.blockMetadata;
    if (!service) return;
    app.get<{ Params: { id: string } }>('/snapshots/:id/allocated-extents', EXPERIMENTAL, async (req) => service.allocated(req.caller, req.params.id, pageOf(req, maxLimit)));
    app.get<{ Params: { id: string } }>('/snapshots/:id/changed-extents', EXPERIMENTAL, async (req) => service.delta(req.caller, { snapshotId: req.params.id }, baseOf(req), pageOf(req, maxLimit)));
    app.get<{ Params: { id: string } }>('/volumes/:id/changed-extents', EXPERIMENTAL, async (req) => service.delta(req.caller, { volumeId: req.params.id }, baseOf(req), pageOf(req, maxLimit)));
  };
}
