/**
 * The REST client the CLI is built on: talks to any Basalt (or Cinder)
 * endpoint, with noauth credentials, a token, or a Keystone password as the
 * OpenStack CLIs take them (`OS_*` variables), and turns fault bodies into
 * one-line errors whose exit code says what kind of failure it was.
 */
import { CliError, EXIT } from './exit-codes.ts';

/** Where and as whom to talk. */
export interface ClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:8776`, or a catalog endpoint that already ends in `/v3/{project}`. */
  url: string;
  project: string;
  user: string;
  /** A token to send instead of the noauth `user:project` one. */
  token?: string;
  /** Microversion to ask for. Default 3.54. */
  version?: string;
}

/** How one call is made. */
export interface CallOptions {
  /** Whether the route is an experimental API (sends `OpenStack-API-Experimental: true`). Default false. */
  experimental?: boolean;
  /** Whether the path is below the API's root rather than `/v3/{project}` (`/openapi.json`). Default false. */
  unversioned?: boolean;
}

/** A thin client over `/v3/{project}`. */
export class ApiClient {
  private readonly base: string;

  constructor(private readonly o: ClientOptions) {
    const url = o.url.replace(/\/+$/, '');
    // A catalog endpoint may carry the version and the project already (Cinder's `…/v3/%(project_id)s`).
    this.base = /\/v3\/[^/]+$/.test(url) ? url : /\/v3$/.test(url) ? `${url}/${o.project}` : `${url}/v3/${o.project}`;
  }

  /** The project the client acts in (said in "not found" messages: the resource may be another project's). */
  get project(): string {
    return /\/v3\/([^/]+)$/.exec(this.base)![1]!;
  }

  /**
   * A streaming GET (server-sent events) of an experimental route: the open
   * response, its body not read.
   * @throws CliError as {@link call} does when it is not a 2xx.
   */
  async stream(path: string, headers: Record<string, string> = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        headers: {
          'X-Auth-Token': this.o.token ?? `${this.o.user}:${this.o.project}`, 'OpenStack-API-Version': `volume ${this.o.version ?? '3.54'}`,
          'OpenStack-API-Experimental': 'true', Accept: 'text/event-stream', ...headers,
        },
      });
    } catch (err) {
      throw unreachable(this.base, err);
    }
    if (!res.ok) {
      const text = await res.text();
      const fault = (() => { try { return Object.values(JSON.parse(text) as Record<string, { message?: string }>)[0]?.message; } catch { return undefined; } })();
      throw new CliError(`GET ${path}: ${fault ?? res.statusText} (HTTP ${res.status})`, res.status === 404 ? EXIT.notFound : res.status < 500 ? EXIT.refused : EXIT.failed);
    }
    return res;
  }

  /**
   * One request; returns the parsed body (undefined for an empty one).
   * @throws CliError with the fault's message: exit code notFound for a 404, refused for another 4xx, failed for a 5xx, unreachable when nothing answers.
   */
  async call<T = any>(method: string, path: string, body?: unknown, o: CallOptions = {}): Promise<T> { // eslint-disable-line @typescript-eslint/no-explicit-any
    let res: Response;
    try {
      res = await fetch(`${o.unversioned ? this.base.replace(/\/v3\/[^/]+$/, '') : this.base}${path}`, {
        method,
        headers: {
          'X-Auth-Token': this.o.token ?? `${this.o.user}:${this.o.project}`,
          'OpenStack-API-Version': `volume ${this.o.version ?? '3.54'}`,
          ...(o.experimental ? { 'OpenStack-API-Experimental': 'true' } : {}),
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw unreachable(this.base, err);
    }
    const text = await res.text();
    let parsed: Record<string, { message?: string }> | undefined;
    try {
      parsed = text ? JSON.parse(text) as Record<string, { message?: string }> : undefined;
    } catch {
      if (res.ok) throw new CliError(`${method} ${path}: the answer is not JSON (is ${this.o.url} a block storage API?)`, EXIT.failed);
    }
    if (!res.ok) {
      const fault = parsed && typeof parsed === 'object' ? Object.values(parsed)[0] : undefined;
      const code = res.status === 404 ? EXIT.notFound : res.status < 500 ? EXIT.refused : EXIT.failed;
      throw new CliError(`${method} ${path}: ${fault?.message ?? res.statusText} (HTTP ${res.status})`, code);
    }
    return parsed as T;
  }
}

/** The one line for an endpoint that does not answer. */
function unreachable(url: string, err: unknown): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (err as Error).message;
  return new CliError(`cannot reach the API at ${url} (${why}): is the server running there? Set it with --url or BASALT_URL`, EXIT.unreachable);
}

/** Credentials and endpoint as given on the command line or in the environment. */
export interface ConnectFlags {
  url?: string;
  project: string;
  user: string;
  token?: string;
  apiVersion?: string;
}

/**
 * A client for the command's flags and the environment, as the OpenStack CLIs
 * read them: `--token`/`OS_TOKEN` with `--url`; else a Keystone password
 * (`OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`, `OS_PROJECT_NAME` or
 * `OS_PROJECT_ID`, the domains, `OS_REGION_NAME`, `OS_INTERFACE`) whose token's
 * catalog gives the endpoint unless `--url` names one; else noauth as
 * `--user`/`--project`.
 */
export async function connect(flags: ConnectFlags, env: NodeJS.ProcessEnv = process.env): Promise<ApiClient> {
  const version = flags.apiVersion ?? env.OS_VOLUME_API_VERSION;
  const fallbackUrl = env.BASALT_URL ?? env.OS_ENDPOINT ?? `http://127.0.0.1:${env.BASALT_PORT ?? '8776'}`;
  const token = flags.token ?? env.OS_TOKEN;
  if (token) return new ApiClient({ url: flags.url ?? fallbackUrl, project: flags.project, user: flags.user, token, version });
  if (env.OS_AUTH_URL && env.OS_USERNAME && env.OS_PASSWORD) {
    const k = await keystoneToken(env);
    return new ApiClient({ url: flags.url ?? k.endpoint ?? fallbackUrl, project: k.projectId, user: env.OS_USERNAME, token: k.token, version });
  }
  return new ApiClient({ url: flags.url ?? fallbackUrl, project: flags.project, user: flags.user, version });
}

/** A project-scoped token from Keystone v3 and the block storage endpoint of its catalog. */
async function keystoneToken(env: NodeJS.ProcessEnv): Promise<{ token: string; projectId: string; endpoint?: string }> {
  const authUrl = env.OS_AUTH_URL!.replace(/\/+$/, '').replace(/\/v3$/, '');
  const domain = (id?: string, name?: string) => (id ? { id } : { name: name ?? 'Default' });
  const project = env.OS_PROJECT_ID
    ? { id: env.OS_PROJECT_ID }
    : { name: env.OS_PROJECT_NAME ?? env.OS_TENANT_NAME, domain: domain(env.OS_PROJECT_DOMAIN_ID, env.OS_PROJECT_DOMAIN_NAME) };
  if (!('id' in project) && !project.name) throw new CliError('OS_AUTH_URL is set but no project is: set OS_PROJECT_NAME or OS_PROJECT_ID', EXIT.usage);
  const body = {
    auth: {
      identity: { methods: ['password'], password: { user: { name: env.OS_USERNAME, password: env.OS_PASSWORD, domain: domain(env.OS_USER_DOMAIN_ID, env.OS_USER_DOMAIN_NAME) } } },
      scope: { project },
    },
  };
  let res: Response;
  try {
    res = await fetch(`${authUrl}/v3/auth/tokens`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  } catch (err) {
    throw unreachable(authUrl, err);
  }
  const text = await res.text();
  if (!res.ok) {
    const message = (() => { try { return (JSON.parse(text) as { error?: { message?: string } }).error?.message; } catch { return undefined; } })();
    throw new CliError(`Keystone at ${authUrl} refused the password of ${env.OS_USERNAME}: ${message ?? res.statusText} (HTTP ${res.status})`, res.status < 500 ? EXIT.refused : EXIT.failed);
  }
  const token = res.headers.get('x-subject-token')!;
  type Catalog = Array<{ type: string; endpoints: Array<{ interface: string; region?: string; region_id?: string; url: string }> }>;
  const t = (JSON.parse(text) as { token: { project: { id: string }; catalog?: Catalog } }).token;
  const iface = (env.OS_INTERFACE ?? 'public').replace(/URL$/, '');
  const service = t.catalog?.find((s) => s.type === 'block-storage') ?? t.catalog?.find((s) => s.type === 'volumev3');
  const endpoint = service?.endpoints.find((e) => e.interface === iface && (!env.OS_REGION_NAME || e.region_id === env.OS_REGION_NAME || e.region === env.OS_REGION_NAME));
  return { token, projectId: t.project.id, endpoint: endpoint?.url.replace('$(project_id)s', t.project.id).replace('%(project_id)s', t.project.id).replace('%(tenant_id)s', t.project.id) };
}
