/**
 * The `noauth` strategy: trusts what the client says. Project and user come
 * from `X-Auth-Token: user:project` (a token without `:` is both) or from
 * `X-Project-Id` / `X-User-Id`; roles from `X-Roles`. Without `X-Roles`, the
 * user named `admin` gets the admin role and everyone else `member`, so that
 * clients that cannot send roles (cinderclient's noauth) can still act as admin.
 * It is refused on non-loopback addresses unless explicitly allowed.
 */
import type { FastifyRequest } from 'fastify';
import type { Caller } from '../common/index.ts';
import { UnauthorizedError } from '../errors/index.ts';

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s.trim() === '' ? undefined : s.trim();
}

/**
 * Builds the caller of a request.
 * @throws UnauthorizedError when no project can be found in the headers.
 */
export function noauthCaller(req: FastifyRequest): Caller {
  const token = header(req, 'x-auth-token');
  let userId: string | undefined;
  let projectId: string | undefined;
  if (token) {
    const i = token.indexOf(':');
    userId = i < 0 ? token : token.slice(0, i);
    projectId = i < 0 ? token : token.slice(i + 1) || userId;
  }
  projectId = header(req, 'x-project-id') ?? projectId;
  userId = header(req, 'x-user-id') ?? userId ?? projectId;
  if (!projectId || !userId) throw new UnauthorizedError('Authentication required: send X-Auth-Token "user:project" or X-Project-Id.');
  const rolesHeader = header(req, 'x-roles');
  const roles = rolesHeader
    ? rolesHeader.split(',').map((r) => r.trim().toLowerCase()).filter(Boolean)
    : [userId === 'admin' ? 'admin' : 'member'];
  return { projectId, userId, roles, isAdmin: roles.includes('admin'), requestId: req.id };
}

/** Whether an address is loopback (noauth is safe only there). */
export function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || /^127\.\d+\.\d+\.\d+$/.test(address);
}
