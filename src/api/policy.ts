/**
 * Who may call what: one table, Cinder's default rules (its `*:policy` names),
 * checked for every request before its body is validated. Every route the API
 * registers must have an entry here (`buildApi` refuses to start otherwise),
 * and test/functional/policy.test.ts walks the table with an admin, a member, a
 * reader and a caller from another project.
 *
 * Rules:
 * - `reader`: anyone with a role in the project (reads);
 * - `member`: a member (or admin) of the project — a `reader` may only read;
 * - `admin`: the admin role.
 * Which rows a caller then sees (own project, or all for admins with
 * `all_tenants`) is decided by the handlers.
 */
import type { FastifyRequest } from 'fastify';
import type { Caller } from '../common/index.ts';
import { ForbiddenError } from '../errors/index.ts';
import { queryValue, truthy } from './pagination.ts';

/** Who an entry lets in. */
export type Rule = 'reader' | 'member' | 'admin';

/** One policy entry. */
export interface PolicyEntry {
  /** Cinder's policy name for it. */
  readonly name: string;
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Route path below `/v3[/{project_id}]`. */
  readonly path: string;
  /** For `…/action` routes: the action (the body's only key). */
  readonly action?: string;
  /** Applies instead of the plain entry when this query flag is true (e.g. `force`). */
  readonly flag?: string;
  readonly rule: Rule;
  /** The microversion the route appears at: below it the route answers 404, not 403. */
  readonly since?: string;
}

const e = (name: string, method: PolicyEntry['method'], path: string, rule: Rule, more: Partial<PolicyEntry> = {}): PolicyEntry => ({ name, method, path, rule, ...more });

/** The table. */
export const POLICY: readonly PolicyEntry[] = [
  // Volumes.
  e('volume:create', 'POST', '/volumes', 'member'),
  e('volume:get_all', 'GET', '/volumes', 'reader'),
  e('volume:get_all', 'GET', '/volumes/detail', 'reader'),
  e('volume:get_all', 'GET', '/volumes/summary', 'reader', { since: '3.12' }),
  e('volume:get', 'GET', '/volumes/:id', 'reader'),
  e('volume:update', 'PUT', '/volumes/:id', 'member'),
  e('volume:delete', 'DELETE', '/volumes/:id', 'member'),
  e('volume:force_delete', 'DELETE', '/volumes/:id', 'admin', { flag: 'force' }),
  e('volume:get_volume_metadata', 'GET', '/volumes/:id/metadata', 'reader'),
  e('volume:get_volume_metadata', 'GET', '/volumes/:id/metadata/:key', 'reader'),
  e('volume:create_volume_metadata', 'POST', '/volumes/:id/metadata', 'member'),
  e('volume:update_volume_metadata', 'PUT', '/volumes/:id/metadata', 'member'),
  e('volume:update_volume_metadata', 'PUT', '/volumes/:id/metadata/:key', 'member'),
  e('volume:delete_volume_metadata', 'DELETE', '/volumes/:id/metadata/:key', 'member'),
  e('volume:extend', 'POST', '/volumes/:id/action', 'member', { action: 'os-extend' }),
  e('volume:revert_to_snapshot', 'POST', '/volumes/:id/action', 'member', { action: 'revert' }),
  e('volume:retype', 'POST', '/volumes/:id/action', 'member', { action: 'os-retype' }),
  e('volume:update_readonly_flag', 'POST', '/volumes/:id/action', 'member', { action: 'os-update_readonly_flag' }),
  e('volume:update', 'POST', '/volumes/:id/action', 'member', { action: 'os-set_bootable' }),
  e('volume_extension:volume_admin_actions:reset_status', 'POST', '/volumes/:id/action', 'admin', { action: 'os-reset_status' }),
  e('volume_extension:volume_admin_actions:force_delete', 'POST', '/volumes/:id/action', 'admin', { action: 'os-force_delete' }),
  e('volume_extension:volume_admin_actions:force_detach', 'POST', '/volumes/:id/action', 'admin', { action: 'os-force_detach' }),
  e('volume_extension:volume_unmanage', 'POST', '/volumes/:id/action', 'admin', { action: 'os-unmanage' }),
  e('volume_extension:volume_admin_actions:migrate_volume', 'POST', '/volumes/:id/action', 'admin', { action: 'os-migrate_volume' }),
  e('volume_extension:volume_admin_actions:migrate_volume_completion', 'POST', '/volumes/:id/action', 'admin', { action: 'os-migrate_volume_completion' }),
  e('volume_extension:volume_actions:reserve', 'POST', '/volumes/:id/action', 'member', { action: 'os-reserve' }),
  e('volume_extension:volume_actions:unreserve', 'POST', '/volumes/:id/action', 'member', { action: 'os-unreserve' }),
  e('volume_extension:volume_actions:initialize_connection', 'POST', '/volumes/:id/action', 'member', { action: 'os-initialize_connection' }),
  e('volume_extension:volume_actions:terminate_connection', 'POST', '/volumes/:id/action', 'member', { action: 'os-terminate_connection' }),
  e('volume_extension:volume_actions:attach', 'POST', '/volumes/:id/action', 'member', { action: 'os-attach' }),
  e('volume_extension:volume_actions:detach', 'POST', '/volumes/:id/action', 'member', { action: 'os-detach' }),
  e('volume_extension:volume_actions:begin_detaching', 'POST', '/volumes/:id/action', 'member', { action: 'os-begin_detaching' }),
  e('volume_extension:volume_actions:roll_detaching', 'POST', '/volumes/:id/action', 'member', { action: 'os-roll_detaching' }),
  e('volume_extension:volume_encryption_metadata', 'GET', '/volumes/:id/encryption', 'reader'),
  e('volume_extension:volume_encryption_metadata', 'GET', '/volumes/:id/encryption/:key', 'reader'),
  // An unknown action is refused by the handler (400), for anyone who may change the volume.
  e('volume:action', 'POST', '/volumes/:id/action', 'member'),

  // Snapshots.
  e('volume:create_snapshot', 'POST', '/snapshots', 'member'),
  e('volume:get_all_snapshots', 'GET', '/snapshots', 'reader'),
  e('volume:get_all_snapshots', 'GET', '/snapshots/detail', 'reader'),
  e('volume:get_snapshot', 'GET', '/snapshots/:id', 'reader'),
  e('volume:update_snapshot', 'PUT', '/snapshots/:id', 'member'),
  e('volume:delete_snapshot', 'DELETE', '/snapshots/:id', 'member'),
  e('volume:get_snapshot_metadata', 'GET', '/snapshots/:id/metadata', 'reader'),
  e('volume:get_snapshot_metadata', 'GET', '/snapshots/:id/metadata/:key', 'reader'),
  e('volume:update_snapshot_metadata', 'POST', '/snapshots/:id/metadata', 'member'),
  e('volume:update_snapshot_metadata', 'PUT', '/snapshots/:id/metadata', 'member'),
  e('volume:update_snapshot_metadata', 'PUT', '/snapshots/:id/metadata/:key', 'member'),
  e('volume:delete_snapshot_metadata', 'DELETE', '/snapshots/:id/metadata/:key', 'member'),
  e('volume_extension:snapshot_admin_actions:reset_status', 'POST', '/snapshots/:id/action', 'admin', { action: 'os-reset_status' }),
  e('volume_extension:snapshot_admin_actions:force_delete', 'POST', '/snapshots/:id/action', 'admin', { action: 'os-force_delete' }),
  e('snapshot_extension:snapshot_actions:update_snapshot_status', 'POST', '/snapshots/:id/action', 'member', { action: 'os-update_snapshot_status' }),
  e('snapshot_extension:snapshot_unmanage', 'POST', '/snapshots/:id/action', 'admin', { action: 'os-unmanage' }),
  e('volume:snapshot_action', 'POST', '/snapshots/:id/action', 'member'),

  // Backups.
  e('backup:create', 'POST', '/backups', 'member'),
  e('backup:get_all', 'GET', '/backups', 'reader'),
  e('backup:get_all', 'GET', '/backups/detail', 'reader'),
  e('backup:get', 'GET', '/backups/:id', 'reader'),
  // Basalt's own route (no Cinder rule): whoever may see the backup may see how far it is.
  e('backup:get', 'GET', '/backups/:id/progress', 'reader'),
  // Block metadata (experimental, issue 17): reading a snapshot's or volume's extents is reading it.
  e('volume:get_snapshot', 'GET', '/snapshots/:id/allocated-extents', 'reader'),
  e('volume:get_snapshot', 'GET', '/snapshots/:id/changed-extents', 'reader'),
  e('volume:get', 'GET', '/volumes/:id/changed-extents', 'reader'),
  // The project's event stream (experimental, issue 17): what a reader may see of its resources.
  e('message:get_all', 'GET', '/events/stream', 'reader'),
  // Webhooks (experimental, issue 17): where every project's events go is an operator's decision.
  e('basalt:webhooks', 'POST', '/webhooks', 'admin'),
  e('basalt:webhooks', 'GET', '/webhooks', 'admin'),
  e('basalt:webhooks', 'GET', '/webhooks/:id', 'admin'),
  e('basalt:webhooks', 'DELETE', '/webhooks/:id', 'admin'),
  e('basalt:webhooks', 'GET', '/webhooks/:id/deliveries', 'admin'),
  e('backup:update', 'PUT', '/backups/:id', 'member', { since: '3.9' }),
  e('backup:delete', 'DELETE', '/backups/:id', 'member'),
  e('backup:restore', 'POST', '/backups/:id/restore', 'member'),
  e('backup:export-import', 'GET', '/backups/:id/export_record', 'admin'),
  e('backup:backup-import', 'POST', '/backups/import_record', 'admin'),
  e('volume_extension:backup_admin_actions:reset_status', 'POST', '/backups/:id/action', 'admin', { action: 'os-reset_status' }),
  e('volume_extension:backup_admin_actions:force_delete', 'POST', '/backups/:id/action', 'admin', { action: 'os-force_delete' }),
  // An unknown action is refused by the handler (400), for anyone who may change the backup.
  e('backup:action', 'POST', '/backups/:id/action', 'member'),

  // Manage and unmanage (admin).
  e('volume_extension:volume_manage', 'POST', '/os-volume-manage', 'admin'),
  e('volume_extension:volume_manage', 'POST', '/manageable_volumes', 'admin', { since: '3.8' }),
  e('snapshot_extension:snapshot_manage', 'POST', '/os-snapshot-manage', 'admin'),
  e('snapshot_extension:snapshot_manage', 'POST', '/manageable_snapshots', 'admin', { since: '3.8' }),
  e('volume_extension:list_manageable', 'GET', '/manageable_volumes', 'admin', { since: '3.8' }),
  e('volume_extension:list_manageable', 'GET', '/manageable_volumes/detail', 'admin', { since: '3.8' }),
  e('snapshot_extension:list_manageable', 'GET', '/manageable_snapshots', 'admin', { since: '3.8' }),
  e('snapshot_extension:list_manageable', 'GET', '/manageable_snapshots/detail', 'admin', { since: '3.8' }),

  // Attachments (3.27).
  e('volume:attachment_create', 'POST', '/attachments', 'member', { since: '3.27' }),
  e('volume:attachment_get_all', 'GET', '/attachments', 'reader', { since: '3.27' }),
  e('volume:attachment_get_all', 'GET', '/attachments/detail', 'reader', { since: '3.27' }),
  e('volume:attachment_get', 'GET', '/attachments/:id', 'reader', { since: '3.27' }),
  e('volume:attachment_update', 'PUT', '/attachments/:id', 'member', { since: '3.27' }),
  e('volume:attachment_delete', 'DELETE', '/attachments/:id', 'member', { since: '3.27' }),
  e('volume:attachment_complete', 'POST', '/attachments/:id/action', 'member', { since: '3.44' }),

  // Group types and group specs (3.11): reads for everyone (Cinder has no rule for them), changes for admins.
  e('group:group_types:get_all', 'GET', '/group_types', 'reader', { since: '3.11' }),
  e('group:group_types:get', 'GET', '/group_types/:id', 'reader', { since: '3.11' }),
  e('group:group_types:create', 'POST', '/group_types', 'admin', { since: '3.11' }),
  e('group:group_types:update', 'PUT', '/group_types/:id', 'admin', { since: '3.11' }),
  e('group:group_types:delete', 'DELETE', '/group_types/:id', 'admin', { since: '3.11' }),
  e('group:group_types_specs:get_all', 'GET', '/group_types/:id/group_specs', 'admin', { since: '3.11' }),
  e('group:group_types_specs:get', 'GET', '/group_types/:id/group_specs/:key', 'admin', { since: '3.11' }),
  e('group:group_types_specs:create', 'POST', '/group_types/:id/group_specs', 'admin', { since: '3.11' }),
  e('group:group_types_specs:update', 'PUT', '/group_types/:id/group_specs/:key', 'admin', { since: '3.11' }),
  e('group:group_types_specs:delete', 'DELETE', '/group_types/:id/group_specs/:key', 'admin', { since: '3.11' }),

  // Generic volume groups (3.13) and group snapshots (3.14).
  e('group:create', 'POST', '/groups', 'member', { since: '3.13' }),
  e('group:get_all', 'GET', '/groups', 'reader', { since: '3.13' }),
  e('group:get_all', 'GET', '/groups/detail', 'reader', { since: '3.13' }),
  e('group:get', 'GET', '/groups/:id', 'reader', { since: '3.13' }),
  e('group:update', 'PUT', '/groups/:id', 'member', { since: '3.13' }),
  e('group:delete', 'POST', '/groups/:id/action', 'member', { since: '3.13', action: 'delete' }),
  e('group:reset_status', 'POST', '/groups/:id/action', 'admin', { since: '3.20', action: 'reset_status' }),
  // Group replication (3.38): Cinder's admin_or_owner.
  e('group:enable_replication', 'POST', '/groups/:id/action', 'member', { since: '3.38', action: 'enable_replication' }),
  e('group:disable_replication', 'POST', '/groups/:id/action', 'member', { since: '3.38', action: 'disable_replication' }),
  e('group:failover_replication', 'POST', '/groups/:id/action', 'member', { since: '3.38', action: 'failover_replication' }),
  e('group:list_replication', 'POST', '/groups/:id/action', 'member', { since: '3.38', action: 'list_replication_targets' }),
  // An unknown action is refused by the handler (400), for anyone who may change the group.
  e('group:update', 'POST', '/groups/:id/action', 'member', { since: '3.13' }),
  e('group:create', 'POST', '/groups/action', 'member', { since: '3.14' }),
  e('group:create_group_snapshot', 'POST', '/group_snapshots', 'member', { since: '3.14' }),
  e('group:get_all_group_snapshots', 'GET', '/group_snapshots', 'reader', { since: '3.14' }),
  e('group:get_all_group_snapshots', 'GET', '/group_snapshots/detail', 'reader', { since: '3.14' }),
  e('group:get_group_snapshot', 'GET', '/group_snapshots/:id', 'reader', { since: '3.14' }),
  e('group:delete_group_snapshot', 'DELETE', '/group_snapshots/:id', 'member', { since: '3.14' }),
  e('group:reset_group_snapshot_status', 'POST', '/group_snapshots/:id/action', 'admin', { since: '3.19', action: 'reset_status' }),
  e('group:update_group_snapshot', 'POST', '/group_snapshots/:id/action', 'member', { since: '3.19' }),

  // Volume types, extra specs, access, defaults.
  e('volume_extension:type_get_all', 'GET', '/types', 'reader'),
  e('volume_extension:type_get', 'GET', '/types/:id', 'reader'),
  e('volume_extension:type_create', 'POST', '/types', 'admin'),
  e('volume_extension:type_update', 'PUT', '/types/:id', 'admin'),
  e('volume_extension:type_delete', 'DELETE', '/types/:id', 'admin'),
  e('volume_extension:types_extra_specs:index', 'GET', '/types/:id/extra_specs', 'reader'),
  e('volume_extension:types_extra_specs:show', 'GET', '/types/:id/extra_specs/:key', 'reader'),
  e('volume_extension:types_extra_specs:create', 'POST', '/types/:id/extra_specs', 'admin'),
  e('volume_extension:types_extra_specs:update', 'PUT', '/types/:id/extra_specs/:key', 'admin'),
  e('volume_extension:types_extra_specs:delete', 'DELETE', '/types/:id/extra_specs/:key', 'admin'),
  e('volume_extension:volume_type_access', 'GET', '/types/:id/os-volume-type-access', 'admin'),
  e('volume_extension:volume_type_access:addProjectAccess', 'POST', '/types/:id/action', 'admin', { action: 'addProjectAccess' }),
  e('volume_extension:volume_type_access:removeProjectAccess', 'POST', '/types/:id/action', 'admin', { action: 'removeProjectAccess' }),
  e('volume_extension:volume_type_access', 'POST', '/types/:id/action', 'admin'),
  e('volume_extension:volume_type_encryption:get', 'GET', '/types/:id/encryption', 'admin'),
  e('volume_extension:volume_type_encryption:create', 'POST', '/types/:id/encryption', 'admin'),
  e('volume_extension:volume_type_encryption:get', 'GET', '/types/:id/encryption/:key', 'admin'),
  e('volume_extension:volume_type_encryption:update', 'PUT', '/types/:id/encryption/:key', 'admin'),
  e('volume_extension:volume_type_encryption:delete', 'DELETE', '/types/:id/encryption/:key', 'admin'),
  e('volume_extension:default_get_all', 'GET', '/default-types', 'admin', { since: '3.62' }),
  e('volume_extension:default_get', 'GET', '/default-types/:project', 'reader', { since: '3.62' }),
  e('volume_extension:default_set_or_update', 'PUT', '/default-types/:project', 'admin', { since: '3.62' }),
  e('volume_extension:default_unset', 'DELETE', '/default-types/:project', 'admin', { since: '3.62' }),

  // QoS specs: admins only, reads included.
  e('volume_extension:qos_specs_manage:get_all', 'GET', '/qos-specs', 'admin'),
  e('volume_extension:qos_specs_manage:create', 'POST', '/qos-specs', 'admin'),
  e('volume_extension:qos_specs_manage:get', 'GET', '/qos-specs/:id', 'admin'),
  e('volume_extension:qos_specs_manage:update', 'PUT', '/qos-specs/:id', 'admin'),
  e('volume_extension:qos_specs_manage:delete', 'DELETE', '/qos-specs/:id', 'admin'),
  e('volume_extension:qos_specs_manage:delete_keys', 'PUT', '/qos-specs/:id/delete_keys', 'admin'),
  e('volume_extension:qos_specs_manage:get_all', 'GET', '/qos-specs/:id/associations', 'admin'),
  e('volume_extension:qos_specs_manage:update', 'GET', '/qos-specs/:id/associate', 'admin'),
  e('volume_extension:qos_specs_manage:update', 'GET', '/qos-specs/:id/disassociate', 'admin'),
  e('volume_extension:qos_specs_manage:update', 'GET', '/qos-specs/:id/disassociate_all', 'admin'),

  // Quotas and limits (a project reads its own quotas; the handler refuses others' to non-admins).
  e('volume_extension:quotas:show', 'GET', '/os-quota-sets/:target', 'reader'),
  e('volume_extension:quotas:show', 'GET', '/os-quota-sets/:target/defaults', 'reader'),
  e('volume_extension:quotas:update', 'PUT', '/os-quota-sets/:target', 'admin'),
  e('volume_extension:quotas:delete', 'DELETE', '/os-quota-sets/:target', 'admin'),
  e('volume_extension:quota_classes', 'GET', '/os-quota-class-sets/:name', 'admin'),
  e('volume_extension:quota_classes', 'PUT', '/os-quota-class-sets/:name', 'admin'),
  e('limits_extension:used_limits', 'GET', '/limits', 'reader'),

  // Messages (3.3).
  e('message:get_all', 'GET', '/messages', 'reader', { since: '3.3' }),
  e('message:get', 'GET', '/messages/:id', 'reader', { since: '3.3' }),
  e('message:delete', 'DELETE', '/messages/:id', 'member', { since: '3.3' }),

  // Transfers: offered by the volume's project, accepted by anyone holding the key.
  ...['/os-volume-transfer', '/volume-transfers'].flatMap((base) => {
    const since = base === '/volume-transfers' ? { since: '3.55' } : {};
    return [
      e('volume:create_transfer', 'POST', base, 'member', since),
      e('volume:get_all_transfers', 'GET', base, 'reader', since),
      e('volume:get_all_transfers', 'GET', `${base}/detail`, 'reader', since),
      e('volume:get_transfer', 'GET', `${base}/:id`, 'reader', since),
      e('volume:delete_transfer', 'DELETE', `${base}/:id`, 'member', since),
      e('volume:accept_transfer', 'POST', `${base}/:id/accept`, 'member', since),
    ];
  }),

  // The service's own inventory.
  e('volume_extension:services:index', 'GET', '/os-services', 'admin'),
  e('volume_extension:services:update', 'PUT', '/os-services/enable', 'admin'),
  e('volume_extension:services:update', 'PUT', '/os-services/disable', 'admin'),
  e('volume_extension:services:update', 'PUT', '/os-services/disable-log-reason', 'admin'),
  e('volume:freeze_host', 'PUT', '/os-services/freeze', 'admin'),
  e('volume:thaw_host', 'PUT', '/os-services/thaw', 'admin'),
  e('volume:failover_host', 'PUT', '/os-services/failover_host', 'admin'),
  e('volume:failover_host', 'PUT', '/os-services/failover', 'admin', { since: '3.26' }),
  // Basalt's own: where each copy of a replicated volume is (issue 16).
  e('volume_extension:volume_admin_actions:show_replication', 'GET', '/volumes/:id/replication', 'admin'),
  e('volume_extension:hosts', 'GET', '/os-hosts', 'admin'),
  e('volume_extension:hosts', 'GET', '/os-hosts/:host', 'admin'),
  e('volume_extension:availability_zone_list', 'GET', '/os-availability-zone', 'reader'),
  e('volume_extension:list_extensions', 'GET', '/extensions', 'reader'),
  e('scheduler_extension:scheduler_stats:get_pools', 'GET', '/scheduler-stats/get_pools', 'admin'),
  e('volume_extension:capabilities', 'GET', '/capabilities/:host', 'admin'),
  // Basalt's own, experimental, served with dashboard_enabled: what the web dashboard reads besides Cinder's routes (issue 18).
  e('scheduler_extension:scheduler_stats:get_pools', 'GET', '/dashboard/pool-history', 'admin'),
  e('message:get_all', 'GET', '/dashboard/events', 'reader'),
  e('clusters:get_all', 'GET', '/clusters', 'admin', { since: '3.7' }),
  e('clusters:get_all', 'GET', '/clusters/detail', 'admin', { since: '3.7' }),
  e('clusters:get', 'GET', '/clusters/:name', 'admin', { since: '3.7' }),
  e('clusters:update', 'PUT', '/clusters/enable', 'admin', { since: '3.7' }),
  e('clusters:update', 'PUT', '/clusters/disable', 'admin', { since: '3.7' }),
  e('workers:cleanup', 'POST', '/workers/cleanup', 'admin', { since: '3.24' }),
];

/** Whether `caller` passes `rule`. */
export function allows(rule: Rule, caller: Caller): boolean {
  if (caller.isAdmin) return true;
  if (rule === 'admin') return false;
  if (rule === 'reader') return caller.roles.length > 0;
  return caller.roles.some((r) => r !== 'reader');
}

/** Key of a route in the table's index. */
const key = (method: string, path: string): string => `${method === 'HEAD' ? 'GET' : method} ${path}`;

/** The table indexed by method and path. */
export class Policy {
  private readonly byRoute = new Map<string, PolicyEntry[]>();

  constructor(entries: readonly PolicyEntry[] = POLICY) {
    for (const p of entries) {
      const k = key(p.method, p.path);
      this.byRoute.set(k, [...(this.byRoute.get(k) ?? []), p]);
    }
  }

  /** Whether a route (path below the version prefix) has entries. */
  covers(method: string, path: string): boolean {
    return method === 'OPTIONS' || this.byRoute.has(key(method, path));
  }

  /** The entry that governs a request: the most specific of action, flag, plain. */
  entryFor(method: string, path: string, req: Pick<FastifyRequest, 'body' | 'query'>): PolicyEntry | undefined {
    const entries = this.byRoute.get(key(method, path));
    if (!entries) return undefined;
    const body = req.body;
    const action = body && typeof body === 'object' && !Array.isArray(body) && Object.keys(body).length === 1 ? Object.keys(body)[0] : undefined;
    const q = (req.query ?? {}) as Record<string, unknown>;
    return entries.find((p) => p.action !== undefined && p.action === action)
      ?? entries.find((p) => p.flag !== undefined && truthy(queryValue(q, p.flag)))
      ?? entries.find((p) => p.action === undefined && p.flag === undefined);
  }

  /**
   * Checks a request against the table.
   * @throws ForbiddenError naming the policy when the caller's roles do not allow it.
   */
  enforce(req: FastifyRequest, path: string): void {
    const p = this.entryFor(req.method, path, req);
    if (!p) throw new ForbiddenError(); // unreachable for registered routes (buildApi checks coverage)
    if (p.since && !req.apiVersion.atLeast(p.since)) return; // the handler answers 404 below its version
    if (!allows(p.rule, req.caller)) throw new ForbiddenError(`Policy doesn't allow ${p.name} to be performed.`);
  }
}
