/**
 * The API app factory: a Fastify instance serving Cinder's v3 API. Routes live
 * in one plugin per resource; this file wires version negotiation, auth, the
 * request id and the one fault mapper around them.
 */
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { newRequestId, systemClock, type Caller } from '../common/index.ts';
import type { BasaltConfig } from '../config/index.ts';
import { InvalidInputError, UnauthorizedError } from '../errors/index.ts';
import { noauthCaller } from './auth.ts';
import { KeystoneAuth } from './keystone-auth.ts';
import { Policy } from './policy.ts';
import type { ApiDeps } from './context.ts';
import { handleClientError, refuseConnect, refuseExpectation } from './client-error.ts';
import { faultBody, handleError, handleFrameworkError } from './fault.ts';
import { infrastructureRoutes } from './infrastructure.ts';
import { replicationRoutes } from './replication.ts';
import { parseJsonBody } from './json-body.ts';
import { messageRoutes } from './messages.ts';
import { quotaRoutes } from './quotas.ts';
import { typeRoutes } from './types.ts';
import { qosRoutes } from './qos-specs.ts';
import { snapshotRoutes } from './snapshots.ts';
import { backupRoutes } from './backups.ts';
import { blockMetadataRoutes } from './block-metadata.ts';
import { eventStreamRoutes } from './event-stream.ts';
import { webhookRoutes } from './webhooks.ts';
import { manageRoutes } from './manage.ts';
import { attachmentRoutes } from './attachments.ts';
import { clusterRoutes } from './clusters.ts';
import { workerRoutes } from './workers.ts';
import { transferRoutes } from './transfers.ts';
import { discoveryRoutes } from './discovery.ts';
import { encryptionRoutes } from './encryption.ts';
import { ExperimentalRoutes } from './experimental.ts';
import { OpenApiRoutes } from './openapi.ts';
import { requestedVersion, served } from './microversion.ts';
import { versionRoutes } from './versions.ts';
import { observabilityRoutes } from './observability-routes.ts';
import { dashboardFiles, dashboardRoutes } from './dashboard.ts';
import { PoolHistory } from './pool-history.ts';
import { volumeRoutes } from './volumes.ts';
import { groupTypeRoutes } from './group-types.ts';
import { groupRoutes } from './groups.ts';
import { groupSnapshotRoutes } from './group-snapshots.ts';

/** Largest request body accepted. */
const BODY_LIMIT_BYTES = 1024 * 1024;

/**
 * Longest path segment routed, as sent (percent-encoded). Fastify's
 * `maxParamLength`, 100 by default, is shorter than the 255 characters of a
 * metadata key Cinder accepts, which take up to 12 bytes each encoded (4 UTF-8
 * bytes, 3 characters each); a longer segment is answered 404.
 */
const MAX_PATH_SEGMENT_LENGTH = 4096;

/** Authenticates a request: the caller from its credentials. */
type Authenticate = (req: FastifyRequest) => Promise<Caller>;

/** The authenticator `auth_strategy` names. */
function authenticator(config: BasaltConfig): { authenticate: Authenticate; challenge?: string } {
  if (config.DEFAULT.auth_strategy === 'keystone') {
    const keystone = new KeystoneAuth(config.keystone_authtoken);
    return { authenticate: (req) => keystone.caller(req), challenge: keystone.challenge };
  }
  return { authenticate: async (req) => noauthCaller(req) };
}

/** Builds the API. Call `listen` on the result (or `inject` in tests). */
export function buildApi(deps: ApiDeps, logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    genReqId: () => newRequestId(),
    bodyLimit: BODY_LIMIT_BYTES,
    logController: new LogController({
      requestIdLogLabel: 'request_id',
      // Fastify's two lines per request are replaced by the one onResponse line below.
      disableRequestLogging: true,
    }),
    // A path segment may be as long as a metadata key Cinder accepts (255); longer ones name nothing.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PATH_SEGMENT_LENGTH },
    // The router's and the HTTP parser's errors are Cinder faults too.
    frameworkErrors: handleFrameworkError,
    clientErrorHandler: handleClientError,
    // Node would refuse an HTTP/1.1 request without Host with an empty body: the hook below does, with a fault.
    http: { requireHostHeader: false },
  }) as unknown as FastifyInstance;

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-openstack-request-id', req.id);
    if (req.headers.host === undefined && req.raw.httpVersion === '1.1') {
      throw new InvalidInputError('Malformed request: an HTTP/1.1 request names its Host');
    }
    // Every answer names its microversion, as Cinder's do: the version
    // documents, 404s, and a 406 (which echoes the version asked for).
    const requested = requestedVersion(req.headers['openstack-api-version']);
    reply.header('OpenStack-API-Version', `volume ${requested}`);
    reply.header('Vary', 'OpenStack-API-Version');
    req.apiVersion = served(requested);
    // A trailing slash below /v3 names an empty id (`GET /volumes/`): nothing is there.
    const path = req.url.split('?', 1)[0]!;
    if (path.endsWith('/') && path.startsWith('/v3/') && path !== '/v3/') return reply.code(404).send(faultBody(404, 'The resource could not be found.'));
  });
  // The job workers of this process let a request go first from when its handler starts (a body
  // still arriving slowly holds nothing) until its answer is sent or its client goes; a stream that
  // stays open does not count.
  const foreground = deps.foreground;
  if (foreground) {
    app.addHook('preHandler', async (req, reply) => {
      if (!req.routeOptions.config.longLived) reply.raw.once('close', foreground.enter());
    });
  }
  // Experimental routes answer only to requests that say they know (after the hook above: a 404 names its microversion too).
  const experimental = new ExperimentalRoutes();
  experimental.install(app);
  // The OpenAPI document of every route registered below (GET /openapi.json).
  new OpenApiRoutes().install(app);
  // A change is answered only once what it committed is on disk (SQLite flushes in groups: Db.durable).
  app.addHook('onSend', async (req, reply, payload) => {
    if (req.method === 'GET' || req.method === 'HEAD') return payload;
    try {
      await deps.db.durable();
      return payload;
    } catch (err) {
      req.log.error({ err }, 'the database could not be flushed to disk; the change may not survive a power cut');
      // A full filesystem is answered as the refused writes are (413 with Retry-After); an I/O error is the server's.
      const code = (err as NodeJS.ErrnoException).code;
      const full = code === 'ENOSPC' || code === 'EDQUOT';
      reply.code(full ? 413 : 500);
      if (full) reply.header('Retry-After', '30');
      return JSON.stringify(faultBody(full ? 413 : 500, full ? 'Basalt\'s state directory is full: the change may not survive a power cut until space is freed.' : 'The change could not be written to disk.'));
    }
  });
  // One JSON log line per request, carrying the same request id the client got.
  app.addHook('onResponse', async (req, reply) => {
    req.log.info({ method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
    deps.observability?.observe(req.method, req.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000);
  });

  // JSON bodies (also under Cinder's own media type): an empty body is no body
  // (some clients send the header on DELETE).
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser(['application/json', 'application/vnd.openstack.volume+json'], { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.server.on('connect', refuseConnect.bind(app));
  app.server.on('checkExpectation', refuseExpectation.bind(app));
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((_req, reply) => reply.code(404).send(faultBody(404, 'The resource could not be found.')));

  // Every route below /v3 must have a policy entry: an endpoint nobody wrote a rule for does not start.
  const policy = new Policy();
  const below = (url: string): string => url.replace(/^\/v3(\/:project_id)?/, '');
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v3/')) return;
    for (const method of [route.method].flat()) {
      if (!policy.covers(method, below(route.url))) throw new Error(`No policy entry for ${method} ${below(route.url)} (src/api/policy.ts)`);
    }
  });
  const enforce = async (req: FastifyRequest): Promise<void> => policy.enforce(req, below(req.routeOptions.url ?? ''));

  app.register(versionRoutes(() => experimental.list()));
  app.register(observabilityRoutes(deps.observability));
  // The web dashboard (off unless enabled): its files at /dashboard/, its two routes below /v3, and the capacity sampler they read.
  const d = deps.config.DEFAULT;
  const poolHistory = d.dashboard_enabled
    ? new PoolHistory({ db: deps.db, services: deps.services, clock: systemClock, downMs: d.service_down_time * 1000, intervalMs: Math.max(1000, d.report_interval * 1000) })
    : undefined;
  if (poolHistory) {
    app.register(dashboardFiles());
    app.addHook('onReady', async () => poolHistory.start());
    // Where to point a browser, once the port is known (it may have been 0).
    app.addHook('onListen', async () => {
      const a = app.server.address();
      if (a && typeof a === 'object') app.log.info({ url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/dashboard/` }, 'web dashboard served');
    });
    app.addHook('onClose', async () => poolHistory.stop());
  }
  const resources = async (scope: FastifyInstance): Promise<void> => {
    await scope.register(volumeRoutes(deps));
    await scope.register(messageRoutes(deps));
    await scope.register(infrastructureRoutes(deps));
    await scope.register(quotaRoutes(deps));
    await scope.register(typeRoutes(deps));
    await scope.register(qosRoutes(deps));
    await scope.register(snapshotRoutes(deps));
    await scope.register(backupRoutes(deps));
    await scope.register(blockMetadataRoutes(deps));
    await scope.register(eventStreamRoutes(deps));
    await scope.register(webhookRoutes(deps));
    await scope.register(manageRoutes(deps));
    await scope.register(attachmentRoutes(deps));
    await scope.register(clusterRoutes(deps));
    await scope.register(workerRoutes(deps));
    await scope.register(transferRoutes(deps));
    await scope.register(discoveryRoutes(deps));
    await scope.register(groupTypeRoutes(deps));
    await scope.register(groupRoutes(deps));
    await scope.register(groupSnapshotRoutes(deps));
    await scope.register(encryptionRoutes(deps));
    if (deps.replication) await scope.register(replicationRoutes(deps, deps.replication));
    if (poolHistory) await scope.register(dashboardRoutes(deps, poolHistory));
  };
  const auth = authenticator(deps.config);
  const prepare = async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    try {
      req.caller = await auth.authenticate(req);
    } catch (err) {
      if (err instanceof UnauthorizedError && auth.challenge) reply.header('WWW-Authenticate', auth.challenge);
      throw err;
    }
  };
  app.register(async (scope) => {
    scope.addHook('onRequest', async (req, reply) => {
      await prepare(req, reply);
      const { project_id: urlProject } = req.params as { project_id: string };
      // A request runs in the project its token names, and the URL must name the
      // same one — for admins too, as in Cinder (admins reach other projects'
      // resources through all_tenants and the admin APIs, never through the URL).
      if (urlProject !== req.caller.projectId) {
        throw new InvalidInputError(`Malformed request URL: URL's project_id '${urlProject}' doesn't match Context's project_id '${req.caller.projectId}'`);
      }
    });
    scope.addHook('preValidation', enforce);
    await resources(scope);
  }, { prefix: '/v3/:project_id' });
  app.register(async (scope) => {
    // Paths without a project id: announced by 3.67, but (as in Cinder) routed at
    // every microversion, so clients that drop the project from the URL keep working.
    scope.addHook('onRequest', prepare);
    scope.addHook('preValidation', enforce);
    await resources(scope);
  }, { prefix: '/v3' });
  return app;
}
