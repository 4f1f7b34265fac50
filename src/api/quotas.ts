/** `os-quota-sets`, `os-quota-class-sets` and `limits`. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ForbiddenError, InvalidInputError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';
import { body, validBody } from './body-declaration.ts';

/** Keys a quota body may carry that are not quotas. */
const NON_QUOTA_KEYS = new Set(['tenant_id', 'id']);

/** A quota body: `{"quota_set": {…}}` or `{"quota_class_set": {…}}` (each value is checked by the quota repository). */
const quotaBody = (key: string): object => ({ type: 'object', required: [key], properties: { [key]: { type: 'object' } } });
const QUOTA_SET = quotaBody('quota_set');
const QUOTA_CLASS_SET = quotaBody('quota_class_set');

/**
 * The quotas of a body, checked against the route's schema.
 * @throws InvalidInputError in Cinder's words for this API: `Missing required element 'quota_set' in request body.`
 */
function bodyOf(req: FastifyRequest, key: string): Record<string, unknown> {
  let inner: Record<string, unknown>;
  try {
    inner = validBody<Record<string, Record<string, unknown>>>(req)[key]!;
  } catch (err) {
    if (err instanceof InvalidInputError) throw new InvalidInputError(`Missing required element '${key}' in request body.`);
    throw err;
  }
  return Object.fromEntries(Object.entries(inner).filter(([k]) => !NON_QUOTA_KEYS.has(k)));
}

/** Registers the routes. */
export function quotaRoutes(deps: ApiDeps) {
  const { db, quotas } = deps;
  return async (app: FastifyInstance): Promise<void> => {
    app.get<{ Params: { target: string } }>('/os-quota-sets/:target', async (req) => {
      const { target } = req.params;
      if (!req.caller.isAdmin && target !== req.caller.projectId) throw new ForbiddenError();
      const usage = truthy(queryValue(req.query as Record<string, unknown>, 'usage'));
      const values = usage ? await quotas.details(db.kysely, target) : await quotas.limits(db.kysely, target);
      return { quota_set: { id: target, ...values } };
    });
    app.get<{ Params: { target: string } }>('/os-quota-sets/:target/defaults', async (req) => ({
      quota_set: { id: req.params.target, ...(await quotas.defaults(db.kysely)) },
    }));
    app.put<{ Params: { target: string } }>('/os-quota-sets/:target', body(QUOTA_SET), async (req) => {
      const values = bodyOf(req, 'quota_set');
      await db.kysely.transaction().execute((tx) => quotas.set(tx, { projectId: req.params.target }, values));
      return { quota_set: await quotas.limits(db.kysely, req.params.target) };
    });
    app.delete<{ Params: { target: string } }>('/os-quota-sets/:target', async (req, reply) => {
      await quotas.reset(db.kysely, req.params.target);
      return reply.code(200).send();
    });
    app.get<{ Params: { name: string } }>('/os-quota-class-sets/:name', async (req) => {
      return { quota_class_set: { id: req.params.name, ...(await quotas.classLimits(db.kysely, req.params.name)) } };
    });
    app.put<{ Params: { name: string } }>('/os-quota-class-sets/:name', body(QUOTA_CLASS_SET), async (req) => {
      const values = bodyOf(req, 'quota_class_set');
      await db.kysely.transaction().execute((tx) => quotas.set(tx, { className: req.params.name }, values));
      return { quota_class_set: await quotas.classLimits(db.kysely, req.params.name) };
    });

    app.get('/limits', async (req) => {
      const limits = await quotas.limits(db.kysely, req.caller.projectId);
      const usage = await quotas.usage(db.kysely, req.caller.projectId);
      return {
        limits: {
          rate: [],
          absolute: {
            maxTotalVolumes: limits.volumes,
            maxTotalSnapshots: limits.snapshots,
            maxTotalVolumeGigabytes: limits.gigabytes,
            maxTotalBackups: limits.backups,
            maxTotalBackupGigabytes: limits.backup_gigabytes,
            totalVolumesUsed: usage.volumes,
            totalGigabytesUsed: usage.gigabytes,
            totalSnapshotsUsed: usage.snapshots,
            totalBackupsUsed: usage.backups,
            totalBackupGigabytesUsed: usage.backup_gigabytes,
          },
        },
      };
    });
  };
}
