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
 */
import type { FastifyRequest } from 'fastify';
import type { Caller } from '../common/index.ts';
import type { KeystoneOptions } from '../config/index.ts';
import { BasaltError, ForbiddenError, UnauthorizedError } from '../errors/index.ts';

/** What a validated token says about its bearer. */
interface Identity { projectId: string | undefined; userId: string; roles: string[] }

/** One cache entry: an identity, or null for a token Keystone refused. */
interface Entry { identity: Identity | null; until: number }

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
    const identity = await this.identity(token);
    if (!identity) throw new UnauthorizedError('The request you have made requires authentication.');
    if (!identity.projectId) throw new ForbiddenError('The token is not scoped to a project; Basalt needs a project-scoped token.');
    return { projectId: identity.projectId, userId: identity.userId, roles: identity.roles, isAdmin: identity.roles.includes('admin'), requestId: req.id };
  }

  private async identity(token: string): Promise<Identity | null> {
    const hit = this.cache.get(token);
    if (hit && hit.until > this.now()) {
      // Refresh its place: the least recently used entries leave first.
      this.cache.delete(token);
      this.cache.set(token, hit);
      return hit.identity;
    }
    let p = this.pending.get(token);
    if (!p) {
      p = this.validate(token).finally(() => this.pending.delete(token));
      this.pending.set(token, p);
    }
    return p;
  }

  private async validate(token: string): Promise<Identity | null> {
    let body: TokenBody | null = null;
    for (let attempt = 0; ; attempt++) {
      const service = await this.serviceToken(attempt > 0);
      const r = await this.fetch('/v3/auth/tokens', { headers: { 'X-Auth-Token': service, 'X-Subject-Token': token } });
      if (r.status === 200) {
        body = await r.json() as TokenBody;
        break;
      }
      if (r.status === 404) break; // unknown, expired or revoked
      if (r.status === 401 && attempt === 0) continue; // our own token expired: log in again
      throw new BasaltError('AUTH_UNAVAILABLE', `Keystone answered ${r.status} when validating a token`, { retryable: true });
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
  private async serviceToken(renew: boolean): Promise<string> {
    if (!renew && this.service && this.service.until > this.now()) return this.service.token;
    this.serviceLogin ??= (async () => {
      const r = await this.fetch('/v3/auth/tokens', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          auth: {
            identity: { methods: ['password'], password: { user: { name: this.o.username, domain: { name: this.o.user_domain_name }, password: this.o.password } } },
            scope: { project: { name: this.o.project_name, domain: { name: this.o.project_domain_name } } },
          },
        }),
      });
      const token = r.headers.get('x-subject-token');
      if (r.status !== 201 || !token) {
        throw new BasaltError('AUTH_UNAVAILABLE', `Keystone refused Basalt's service user ${this.o.username} (${r.status})`, { retryable: true });
      }
      const expires = Date.parse(((await r.json()) as TokenBody).token.expires_at);
      // Renew a minute early, so that no validation runs with a token about to expire.
      this.service = { token, until: expires - 60_000 };
      return token;
    })().finally(() => { this.serviceLogin = undefined; });
    return this.serviceLogin;
  }

  private async fetch(path: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, { ...init, signal: AbortSignal.timeout(this.o.http_connect_timeout * 1000) });
    } catch (err) {
      throw new BasaltError('AUTH_UNAVAILABLE', `Keystone at ${this.base} cannot be reached`, { cause: err, retryable: true });
    }
  }
}
