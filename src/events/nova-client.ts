/**
 * The client of the compute side's external events API: `POST
 * /os-server-external-events` as Cinder sends it (`cinder/compute/nova.py`),
 * authenticated as `[nova]` says — a Keystone password token, Nova's endpoint
 * from the token's catalog by `region_name` and `interface` (or
 * `endpoint_override`) — or, with `auth_type = none`, a plain endpoint.
 *
 * One send is one HTTP request bounded by `[nova] timeout`. The answer is
 * classified, never thrown raw: delivered (every event answered 200), refused
 * (Nova said no: a 4xx, or an event it answered with another code — the
 * server is gone or on no host; trying again would not help) or failed (no
 * answer, a timeout, a 5xx: worth trying again).
 */
import { passwordLoginBody } from '../common/index.ts';
import type { NovaOptions } from '../config/index.ts';

/** The compute API microversion that knows `volume-extended` (Nova 2.51, as Cinder asks). */
export const VOLUME_EXTENDED_MICROVERSION = '2.51';

/** One external event, as Nova's schema for `POST /os-server-external-events` has it. */
export interface ExternalEvent {
  /** The instance the event is for. */
  server_uuid: string;
  /** Nova's event name, e.g. `volume-extended`. */
  name: string;
  /** For volume events, the volume id. */
  tag?: string;
}

/** What one send came to. */
export interface SendResult {
  outcome: 'delivered' | 'failed' | 'refused';
  /** Nova's status, absent when no answer came. */
  httpStatus?: number;
  /** Why it was not delivered, in Basalt's words (for the log and the delivery history; never for users). */
  error?: string;
  durationMs: number;
}

/** A Keystone token and what its catalog says of the compute endpoint. */
interface Session { token: string; endpoint: string; untilMs: number }

/** Keystone's token body (the parts read here). */
interface TokenBody {
  token: {
    expires_at: string;
    catalog?: Array<{ type: string; endpoints: Array<{ interface: string; region?: string; region_id?: string; url: string }> }>;
  };
}

/** Renew a token this long before Keystone says it expires. */
const TOKEN_MARGIN_MS = 60_000;

/** Sends external events to one Nova. One per process. */
export class NovaClient {
  private session: Session | undefined;

  constructor(private readonly o: NovaOptions) {}

  /** Whether `[nova]` says where Nova is: without it Basalt tells the compute side nothing. */
  static configured(o: NovaOptions): boolean {
    return o.endpoint_override !== '' || o.auth_url !== '';
  }

  /** Sends `events` at `microversion`; `requestId` is passed on as the global request id. */
  async send(events: readonly ExternalEvent[], microversion: string, requestId: string | null): Promise<SendResult> {
    const started = Date.now();
    const took = (): number => Date.now() - started;
    let session: Session;
    try {
      session = await this.login();
    } catch (err) {
      return { outcome: 'failed', error: `could not authenticate to Keystone: ${(err as Error).message}`, durationMs: took() };
    }
    let r: Response;
    try {
      r = await fetch(`${session.endpoint.replace(/\/+$/, '')}/os-server-external-events`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/json',
          'OpenStack-API-Version': `compute ${microversion}`,
          'X-OpenStack-Nova-API-Version': microversion,
          ...(session.token ? { 'X-Auth-Token': session.token } : {}),
          ...(requestId ? { 'X-OpenStack-Request-ID': requestId } : {}),
        },
        body: JSON.stringify({ events }),
        signal: AbortSignal.timeout(this.o.timeout * 1000),
      });
    } catch (err) {
      const e = err as Error;
      const why = e.name === 'TimeoutError' ? `no answer within ${this.o.timeout} s` : `${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ''}`;
      return { outcome: 'failed', error: `Nova could not be reached: ${why}`, durationMs: took() };
    }
    const text = await r.text().catch(() => '');
    if (r.status === 401) this.session = undefined; // a revoked token: log in again next time
    if (r.status >= 500 || r.status === 401 || r.status === 408 || r.status === 429) {
      return { outcome: 'failed', httpStatus: r.status, error: `Nova answered ${r.status}`, durationMs: took() };
    }
    if (r.status >= 400) return { outcome: 'refused', httpStatus: r.status, error: `Nova refused the events (${r.status}): ${text.slice(0, 500)}`, durationMs: took() };
    // 200, or 207 when some events failed: each event carries its own code.
    let answered: Array<{ code?: number; server_uuid?: string; status?: string }> = [];
    try {
      answered = (JSON.parse(text) as { events?: typeof answered }).events ?? [];
    } catch {
      return { outcome: 'refused', httpStatus: r.status, error: 'Nova\'s answer is not JSON', durationMs: took() };
    }
    const bad = answered.filter((e) => e.code !== 200);
    if (bad.length > 0 || answered.length === 0) {
      const which = bad.map((e) => `${e.server_uuid ?? '?'}: ${e.code ?? 'no code'} ${e.status ?? ''}`.trim()).join('; ');
      return { outcome: 'refused', httpStatus: r.status, error: `Nova did not take every event (${which || 'none answered'})`, durationMs: took() };
    }
    return { outcome: 'delivered', httpStatus: r.status, durationMs: took() };
  }

  /** A token and Nova's endpoint; a cached one until shortly before it expires. */
  private async login(): Promise<Session> {
    if (this.o.auth_type === 'none') return { token: '', endpoint: this.o.endpoint_override, untilMs: Infinity };
    if (this.session && this.session.untilMs > Date.now()) return this.session;
    const base = this.o.auth_url.replace(/\/+$/, '').replace(/\/v3$/, '');
    const r = await fetch(`${base}/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: passwordLoginBody(this.o),
      signal: AbortSignal.timeout(this.o.timeout * 1000),
    });
    const token = r.headers.get('x-subject-token');
    if (r.status !== 201 || !token) throw new Error(`Keystone at ${base} answered ${r.status}`);
    const body = await r.json() as TokenBody;
    const endpoint = this.o.endpoint_override || this.computeEndpoint(body);
    const expires = Date.parse(body.token.expires_at);
    this.session = { token, endpoint, untilMs: (Number.isFinite(expires) ? expires : Date.now() + 3600_000) - TOKEN_MARGIN_MS };
    return this.session;
  }

  /** The compute endpoint of the catalog for `interface` and `region_name`. @throws Error when there is none. */
  private computeEndpoint(body: TokenBody): string {
    for (const service of body.token.catalog ?? []) {
      if (service.type !== 'compute') continue;
      const e = service.endpoints.find((x) => x.interface === this.o.interface
        && (this.o.region_name === '' || x.region_id === this.o.region_name || x.region === this.o.region_name));
      if (e) return e.url;
    }
    throw new Error(`the catalog has no ${this.o.interface} compute endpoint${this.o.region_name ? ` in region ${this.o.region_name}` : ''}`);
  }
}
