/**
 * The dashboard's client of Basalt's API: the same routes, headers and
 * credentials any Cinder client uses, so the page sees exactly what its token
 * may see. Paths go below `/v3` without a project id (routed at every
 * microversion, as in Cinder), which suits both a noauth `user:project` token
 * and a Keystone one.
 */

/** The microversion the dashboard was written against: pinned, so a newer server's changes do not surprise it. */
export const MICROVERSION = '3.70';

/** Where the token is kept: this tab only, gone when it closes. */
const TOKEN_KEY = 'basalt.dashboard.token';

/**
 * The event dispatched on `window` when the API refuses the signed-in token
 * (401: it expired, was revoked, or Keystone no longer knows it); its `detail`
 * is the API's message. The app signs out and says why on the sign-in form,
 * rather than leaving every page to show the same refusal.
 */
export const TOKEN_REFUSED_EVENT = 'basalt:token-refused';

/** Tells the app that the API refused the token, with the API's words. */
export function reportTokenRefused(message: string): void {
  window.dispatchEvent(new CustomEvent<string>(TOKEN_REFUSED_EVENT, { detail: message }));
}

/** A failed request, with the API's own fault message. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The token of this tab, if signed in. */
export function storedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

/** Keeps (or, with undefined, forgets) the token of this tab. */
export function storeToken(token: string | undefined): void {
  if (token === undefined) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

/** Options of {@link get}. */
export interface GetOptions {
  /** Send `OpenStack-API-Experimental: true` (Basalt's own routes). */
  experimental?: boolean;
  signal?: AbortSignal;
}

/**
 * GETs `/v3{path}` with `token` and returns the parsed body.
 * @throws ApiError with the fault's message (or the status line) when the answer is not 2xx.
 */
export async function get<T>(token: string, path: string, o: GetOptions = {}): Promise<T> {
  const headers: Record<string, string> = {
    'X-Auth-Token': token,
    'OpenStack-API-Version': `volume ${MICROVERSION}`,
    Accept: 'application/json',
  };
  if (o.experimental) headers['OpenStack-API-Experimental'] = 'true';
  const r = await fetch(`/v3${path}`, { headers, ...(o.signal ? { signal: o.signal } : {}) });
  const text = await r.text();
  const body: unknown = text === '' ? undefined : JSON.parse(text);
  if (!r.ok) {
    const err = new ApiError(r.status, faultMessage(body) ?? `${r.status} ${r.statusText}`);
    if (r.status === 401) reportTokenRefused(err.message);
    throw err;
  }
  return body as T;
}

/** The message of a Cinder fault body (`{"itemNotFound": {"code": 404, "message": "…"}}`). */
function faultMessage(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const inner = Object.values(body)[0] as { message?: unknown } | undefined;
  return typeof inner?.message === 'string' ? inner.message : undefined;
}

/** A volume as `GET /volumes/detail` shows it (the fields the dashboard uses). */
export interface Volume {
  id: string;
  name: string | null;
  status: string;
  size: number;
  volume_type: string | null;
  created_at: string;
  attachments: Array<{ server_id?: string | null; attachment_id: string; host_name?: string | null }>;
  'os-vol-host-attr:host'?: string | null;
  'os-vol-tenant-attr:tenant_id'?: string;
}

/** A snapshot as `GET /snapshots/detail` shows it. */
export interface Snapshot {
  id: string;
  name: string | null;
  status: string;
  size: number;
  volume_id: string;
  created_at: string;
}

/** A backup as `GET /backups/detail` shows it. */
export interface Backup {
  id: string;
  name: string | null;
  status: string;
  size: number;
  volume_id: string;
  is_incremental: boolean;
  fail_reason: string | null;
  created_at: string;
}

/** An attachment as `GET /attachments/detail` (3.27) shows it. */
export interface Attachment {
  id: string;
  volume_id: string;
  instance: string | null;
  status: string;
  attach_mode: string | null;
  attached_at: string | null;
}

/** A service as `GET /os-services` shows it. */
export interface Service {
  binary: string;
  host: string;
  zone: string;
  status: string;
  state: string;
  updated_at: string | null;
  disabled_reason: string | null;
  cluster?: string | null;
}

/** A cluster as `GET /clusters/detail` (3.7) shows it. */
export interface Cluster {
  name: string;
  binary: string;
  state: string;
  status: string;
  num_hosts: number;
  num_down_hosts: number;
  last_heartbeat: string | null;
  disabled_reason: string | null;
}

/** One pool's sampled capacity (`GET /dashboard/pool-history`, Basalt's own). */
export interface PoolHistory {
  name: string;
  volume_backend_name: string;
  samples: Array<{ at: string; total_capacity_gb: number; free_capacity_gb: number; provisioned_capacity_gb: number }>;
}

/** A status event (`GET /dashboard/events`, Basalt's own). */
export interface StatusEvent {
  id: string;
  project_id: string;
  resource_type: string;
  resource_id: string;
  event: string;
  from_status: string | null;
  to_status: string | null;
  request_id: string | null;
  created_at: string;
}

/** A user message (`GET /messages`, 3.3). */
export interface UserMessage {
  id: string;
  user_message: string;
  created_at: string;
}
