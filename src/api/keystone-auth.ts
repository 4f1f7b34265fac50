/**
 * The `keystone` strategy: validates each request's `X-Auth-Token` against
 * Keystone v3 the way keystonemiddleware does — `GET /v3/auth/tokens` with the
 * token as `X-Subject-Token`, Basalt authenticated by its own service user's
 * token — and builds the caller from the token's project, user and roles.
 *
 * Results (valid and invalid) are cached for `token_cache_time`, never past
 * the token's expiry, in a map bounded at `token_cache_size` entries (least
 * recently used leave first); concurrent validations of one token share one
 * request to Keystone.
 *
 * A slow Keystone is not a down Keystone: a call that times out, cannot
 * connect or gets a 502/503/504 is tried again (`http_request_max_retries`
 * times, keystonemiddleware's option), each try given a longer timeout
 * (`http_connect_timeout` × try number) after a jittered back-off, before the
 * request is answered 503.
 *
 * Nothing about the deployment reaches a caller who has not been
 * authenticated: the 503 says only that the identity service is unavailable,
 * as keystonemiddleware's does. Keystone's URL, Basalt's service user and what
 * Keystone answered are logged with the request id (the error's `cause`) and
 * never sent (issue 13, defect 12).
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { passwordLoginBody, type Caller } from '../common/index.ts';
import type { KeystoneOptions } from '../config/index.ts';
import { BasaltError, ForbiddenError, UnauthorizedError } from '../errors/index.ts';

/** What a validated token says about its bearer. */
interface Identity { projectId: string | undefined; userId: string; roles: string[] }

/** One cache entry: an identity, or null for a token Keystone refused. */
interface Entry { identity: Identity | null; until: number }

/** The only words a client hears when Keystone cannot validate its token (keystonemiddleware's). */
export const AUTH_UNAVAILABLE_MESSAGE = 'The Keystone service is temporarily unavailable.';

/** First back-off between two tries of a Keystone call, in ms (doubles per try, full jitter). */
const RETRY_BASE_DELAY_MS = 200;

/** HTTP statuses from Keystone (or a proxy in front of it) that say "try again". */
const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);

/**
 * The error a caller gets when Keystone cannot validate its token: a 503 with
 * {@link AUTH_UNAVAILABLE_MESSAGE}; `detail` (URL, user, status) goes to the
 * log only, as the cause.
 */
function unavailable(detail: string, cause?: unknown): BasaltError {
  return new BasaltError('AUTH_UNAVAILABLE', AUTH_UNAVAILABLE_MESSAGE, {
    cause: new Error(detail, cause === undefined ? undefined : { cause }), retryable: true,
  });
}

/** Keystone's token body (the parts Basalt reads). */
interface TokenBody {
  token: {
    expires_at: string;
    user: { id: string };
    project?: { id: string };
    roles?: Array<{ name: string }>;
  };
}

/** Validates tokens against one Keystone. One per process. */
export class KeystoneAuth {
  private readonly cache = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Identity | null>>();
  private service: { token: string; until: number } | undefined;
  private serviceLogin: Promise<string> | undefined;
  private readonly base: string;

  constructor(private readonly o: KeystoneOptions, private readonly now: () => number = Date.now) {
    this.base = o.auth_url.replace(/\/+$/, '').replace(/\/v3$/, '');
  }

  /** The value of `WWW-Authenticate` on a 401. */
  get challenge(): string {
    return `Keystone uri="${this.o.www_authenticate_uri || this.o.auth_url}"`;
  }

  /**
   * The caller of a request.
   * @throws UnauthorizedError (no token, or one Keystone refuses), ForbiddenError
   *   (a token not scoped to a project), BasaltError AUTH_UNAVAILABLE.
   */
  async caller(req: FastifyRequest): Promise<Caller> {
    const raw = req.headers['x-auth-token'];
    const token = (Array.isArray(raw) ? raw[0] : raw)?.trim();
    // Keystone tokens are short printable ASCII; anything else is refused here, not sent on.
    if (!token || token.length > 8192 || /[^\x21-\x7e]/.test(token)) throw new UnauthorizedError('The request you have made requires authentication.');
    const identity = await this.identity(token, req.log);
    if (!identity) throw new UnauthorizedError('The request you have made requires authentication.');
    if (!identity.projectId) throw new ForbiddenError('The token is not scoped to a project; Basalt needs a project-scoped token.');
    return { projectId: identity.projectId, userId: identity.userId, roles: identity.roles, isAdmin: identity.roles.includes('admin'), requestId: req.id };
  }

  private async identity(token: string, log: FastifyBaseLogger | undefined): Promise<Identity | null> {
    const hit = this.cache.get(token);
    if (hit && hit.until > this.now()) {
      // Refresh its place: the least recently used entries leave first.
      this.cache.delete(token);
      this.cache.set(token, hit);
      return hit.identity;
    }
    let p = this.pending.get(token);
    if (!p) {
      // Retries are logged with the request that started the validation.
      p = this.validate(token, log).finally(() => this.pending.delete(token));
      this.pending.set(token, p);
    }
    return p;
  }

  private async validate(token: string, log: FastifyBaseLogger | undefined): Promise<Identity | null> {
    let body: TokenBody | null = null;
    for (let attempt = 0; ; attempt++) {
      const service = await this.serviceToken(attempt > 0, log);
      const r = await this.fetch('/v3/auth/tokens', { headers: { 'X-Auth-Token': service, 'X-Subject-Token': token } }, log);
      if (r.status === 200) {
        body = await r.json() as TokenBody;
        break;
      }
      if (r.status === 404) break; // unknown, expired or revoked
      if (r.status === 401 && attempt === 0) continue; // our own token expired: log in again
      throw unavailable(`Keystone at ${this.base} answered ${r.status} when validating a token`);
    }
    const cacheMs = this.o.token_cache_time * 1000;
    const identity = body ? {
      projectId: body.token.project?.id,
      userId: body.token.user.id,
      roles: (body.token.roles ?? []).map((role) => role.name.toLowerCase()),
    } : null;
    if (cacheMs > 0) {
      const expires = body ? Date.parse(body.token.expires_at) : Infinity;
      this.remember(token, { identity, until: Math.min(this.now() + cacheMs, expires) });
    }
    return identity;
  }

  private remember(token: string, entry: Entry): void {
    this.cache.set(token, entry);
    while (this.cache.size > this.o.token_cache_size) this.cache.delete(this.cache.keys().next().value!);
  }

  /** Basalt's own token (password login as the service user), renewed before it expires. */
  private async serviceToken(renew: boolean, log: FastifyBaseLogger | undefined): Promise<string> {
    if (!renew && this.service && this.service.until > this.now()) return this.service.token;
    this.serviceLogin ??= (async () => {
      const r = await this.fetch('/v3/auth/tokens', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: passwordLoginBody(this.o),
      }, log);
      const token = r.headers.get('x-subject-token');
      if (r.status !== 201 || !token) {
        throw unavailable(`Keystone at ${this.base} refused Basalt's service user ${this.o.username} (${r.status}): check [keystone_authtoken]`);
      }
      const expires = Date.parse(((await r.json()) as TokenBody).token.expires_at);
      // Renew a minute early, so that no validation runs with a token about to expire.
      this.service = { token, until: expires - 60_000 };
      return token;
    })().finally(() => { this.serviceLogin = undefined; });
    return this.serviceLogin;
  }

  /**
   * One call to Keystone, tried again while Keystone is slow or unreachable:
   * up to `http_request_max_retries` more times, try n waiting up to
   * `http_connect_timeout` × n seconds, after a jittered exponential back-off.
   * A 502/503/504 is retried like a timeout; any other answer is returned.
   * @throws BasaltError AUTH_UNAVAILABLE when every try failed.
   */
  private async fetch(path: string, init: RequestInit, log: FastifyBaseLogger | undefined): Promise<Response> {
    const tries = 1 + Math.max(0, this.o.http_request_max_retries);
    let failure = '';
    let cause: unknown;
    for (let n = 1; n <= tries; n++) {
      if (n > 1) {
        log?.warn({ keystone: this.base, path, try: n - 1, of: tries, failure, err: cause }, 'Keystone did not answer; trying again');
        await new Promise((r) => setTimeout(r, Math.random() * RETRY_BASE_DELAY_MS * 2 ** (n - 2)));
      }
      const timeoutMs = this.o.http_connect_timeout * 1000 * n;
      try {
        const r = await fetch(`${this.base}${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) });
        // The body is read within the try's timeout too: a Keystone that stalls mid-answer is slow, not broken.
        const body = await r.text();
        if (!RETRYABLE_STATUSES.has(r.status) || n === tries) return new Response(body, { status: r.status, headers: r.headers });
        failure = `answered ${r.status}`;
        cause = undefined;
      } catch (err) {
        failure = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : 'cannot be reached';
        cause = err;
      }
    }
    throw unavailable(`Keystone at ${this.base} ${failure} (${tries} tries)`, cause);
  }
}
