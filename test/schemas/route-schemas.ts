/**
 * Which tempest response schema judges each Basalt API route: one row per
 * route (Fastify's pattern below `/v3/{project_id}`), per action for
 * `POST …/action`, and per query flag where tempest's client picks another
 * schema for it (`?usage=true`, `?detail=true`). A schema is named
 * `module/attr` after tempest.lib.api_schema.response.volume (the unversioned
 * module: the client's microversion table picks the versioned one, see
 * tempest-schemas.ts).
 *
 * Routes tempest has no schema for are listed with `none` and the reason;
 * schema-coverage.test.ts fails when a route Basalt registers (or an action its
 * policy names) has no row, so a new route cannot go unjudged.
 */

/** One row of the table. */
export interface RouteSchema {
  /** `METHOD /path`, the path as Fastify's route pattern below `/v3/{project_id}` (e.g. `GET /volumes/:id`). */
  readonly route: string;
  /** For `POST …/action`: the action (the request body's only key). */
  readonly action?: string;
  /** This row applies instead of the plain one when the query flag is true (tempest's `usage=True`). */
  readonly flag?: string;
  /** The tempest schema, `module/attr` (e.g. `volumes/show_volume`). */
  readonly schema?: string;
  /** Why tempest has no schema for it (when `schema` is absent). */
  readonly none?: string;
}

const s = (route: string, schema: string, more: Partial<RouteSchema> = {}): RouteSchema => ({ route, schema, ...more });
const none = (route: string, reason: string, more: Partial<RouteSchema> = {}): RouteSchema => ({ route, none: reason, ...more });
const act = (route: string, action: string, schema: string): RouteSchema => ({ route, action, schema });

const NO_ATTACHMENT_SCHEMA = "tempest's attachments client (3.27) validates no response schema";
const NOVA_ONLY = 'a call of the compute side (Nova); tempest has no client method or schema for it';

/** Routes below `/v3/{project_id}` (also routed below `/v3`) and their judges. */
export const ROUTE_SCHEMAS: readonly RouteSchema[] = [
  // Volumes.
  s('POST /volumes', 'volumes/create_volume'),
  s('GET /volumes', 'volumes/list_volumes_no_detail'),
  s('GET /volumes/detail', 'volumes/list_volumes_with_detail'),
  s('GET /volumes/summary', 'volumes/show_volume_summary'),
  s('GET /volumes/:id', 'volumes/show_volume'),
  s('PUT /volumes/:id', 'volumes/update_volume'),
  s('DELETE /volumes/:id', 'volumes/delete_volume'),
  s('GET /volumes/:id/metadata', 'volumes/show_volume_metadata'),
  s('GET /volumes/:id/metadata/:key', 'volumes/show_volume_metadata_item'),
  s('POST /volumes/:id/metadata', 'volumes/create_volume_metadata'),
  s('PUT /volumes/:id/metadata', 'volumes/update_volume_metadata'),
  s('PUT /volumes/:id/metadata/:key', 'volumes/update_volume_metadata_item'),
  s('DELETE /volumes/:id/metadata/:key', 'volumes/delete_volume_metadata_item'),
  act('POST /volumes/:id/action', 'os-extend', 'volumes/extend_volume'),
  act('POST /volumes/:id/action', 'os-reset_status', 'volumes/reset_volume_status'),
  act('POST /volumes/:id/action', 'os-force_delete', 'volumes/force_delete_volume'),
  act('POST /volumes/:id/action', 'os-unmanage', 'volumes/unmanage_volume'),
  act('POST /volumes/:id/action', 'os-force_detach', 'volumes/force_detach_volume'),
  act('POST /volumes/:id/action', 'os-update_readonly_flag', 'volumes/update_volume_readonly'),
  act('POST /volumes/:id/action', 'os-set_bootable', 'volumes/set_bootable_volume'),
  act('POST /volumes/:id/action', 'os-retype', 'volumes/retype_volume'),
  none('POST /volumes/:id/action', "tempest's migrate_volume validates no response schema (202, no body)", { action: 'os-migrate_volume' }),
  none('POST /volumes/:id/action', 'a call of the compute side (Nova) finishing a swap; tempest has no client method or schema for it', { action: 'os-migrate_volume_completion' }),
  act('POST /volumes/:id/action', 'os-reserve', 'volumes/reserve_volume'),
  act('POST /volumes/:id/action', 'os-unreserve', 'volumes/unreserve_volume'),
  act('POST /volumes/:id/action', 'os-attach', 'volumes/attach_volume'),
  act('POST /volumes/:id/action', 'os-detach', 'volumes/detach_volume'),
  none('POST /volumes/:id/action', 'revert to snapshot (3.40): tempest\'s volumes client has no revert method or schema', { action: 'revert' }),
  none('POST /volumes/:id/action', NOVA_ONLY, { action: 'os-initialize_connection' }),
  none('POST /volumes/:id/action', NOVA_ONLY, { action: 'os-terminate_connection' }),
  none('POST /volumes/:id/action', NOVA_ONLY, { action: 'os-begin_detaching' }),
  none('POST /volumes/:id/action', NOVA_ONLY, { action: 'os-roll_detaching' }),
  none('GET /volumes/:id/encryption', `encryption metadata of a volume: ${NOVA_ONLY}`),
  none('GET /volumes/:id/encryption/:key', `encryption metadata of a volume: ${NOVA_ONLY}`),

  // Snapshots.
  s('POST /snapshots', 'snapshots/create_snapshot'),
  s('GET /snapshots', 'snapshots/list_snapshots_no_detail'),
  s('GET /snapshots/detail', 'snapshots/list_snapshots_with_detail'),
  s('GET /snapshots/:id', 'snapshots/show_snapshot'),
  s('PUT /snapshots/:id', 'snapshots/update_snapshot'),
  s('DELETE /snapshots/:id', 'snapshots/delete_snapshot'),
  s('GET /snapshots/:id/metadata', 'snapshots/show_snapshot_metadata'),
  s('GET /snapshots/:id/metadata/:key', 'snapshots/show_snapshot_metadata_item'),
  s('POST /snapshots/:id/metadata', 'snapshots/create_snapshot_metadata'),
  s('PUT /snapshots/:id/metadata', 'snapshots/update_snapshot_metadata'),
  s('PUT /snapshots/:id/metadata/:key', 'snapshots/update_snapshot_metadata_item'),
  s('DELETE /snapshots/:id/metadata/:key', 'snapshots/delete_snapshot_metadata_item'),
  act('POST /snapshots/:id/action', 'os-reset_status', 'snapshots/reset_snapshot_status'),
  act('POST /snapshots/:id/action', 'os-force_delete', 'snapshots/force_delete_snapshot'),
  act('POST /snapshots/:id/action', 'os-unmanage', 'snapshots/unmanage_snapshot'),
  // Manage (tempest's manage clients post to os-volume-manage / os-snapshot-manage; the 3.8 paths answer alike).
  s('POST /os-volume-manage', 'manage_volume/manage_volume'),
  s('POST /manageable_volumes', 'manage_volume/manage_volume'),
  s('POST /os-snapshot-manage', 'manage_snapshot/manage_snapshot'),
  s('POST /manageable_snapshots', 'manage_snapshot/manage_snapshot'),
  none('GET /manageable_volumes', "tempest has no client for the 3.8 manageable listings"),
  none('GET /manageable_volumes/detail', "tempest has no client for the 3.8 manageable listings"),
  none('GET /manageable_snapshots', "tempest has no client for the 3.8 manageable listings"),
  none('GET /manageable_snapshots/detail', "tempest has no client for the 3.8 manageable listings"),
  act('POST /snapshots/:id/action', 'os-update_snapshot_status', 'snapshots/update_snapshot_status'),

  // Backups.
  s('POST /backups', 'backups/create_backup'),
  s('GET /backups', 'backups/list_backups_no_detail'),
  s('GET /backups/detail', 'backups/list_backups_with_detail'),
  s('GET /backups/:id', 'backups/show_backup'),
  none('GET /volumes/:id/replication', "Basalt's own route (where each copy of a replicated volume is, issue 16): Cinder and tempest have none"),
  ...['GET /snapshots/:id/allocated-extents', 'GET /snapshots/:id/changed-extents', 'GET /volumes/:id/changed-extents']
    .map((r) => none(r, "Basalt's own experimental block metadata route (CSI's SnapshotMetadata shape): Cinder and tempest have none")),
  ...['POST /webhooks', 'GET /webhooks', 'GET /webhooks/:id', 'DELETE /webhooks/:id', 'GET /webhooks/:id/deliveries']
    .map((r) => none(r, "Basalt's own experimental webhook administration: Cinder and tempest have none")),
  none('GET /events/stream', "Basalt's own experimental event stream (server-sent events, not JSON): Cinder and tempest have none"),
  none('GET /backups/:id/progress', "Basalt's own route (the progress of a running backup or restore): Cinder and tempest have none"),
  s('PUT /backups/:id', 'backups/update_backup'),
  s('DELETE /backups/:id', 'backups/delete_backup'),
  s('POST /backups/:id/restore', 'backups/restore_backup'),
  s('GET /backups/:id/export_record', 'backups/export_backup'),
  s('POST /backups/import_record', 'backups/import_backup'),
  act('POST /backups/:id/action', 'os-reset_status', 'backups/reset_backup_status'),
  none('POST /backups/:id/action', "tempest's backups client has no force delete (its clean-up deletes), so no schema", { action: 'os-force_delete' }),

  // Attachments (3.27).
  none('POST /attachments', NO_ATTACHMENT_SCHEMA),
  none('GET /attachments', NO_ATTACHMENT_SCHEMA),
  none('GET /attachments/detail', NO_ATTACHMENT_SCHEMA),
  none('GET /attachments/:id', NO_ATTACHMENT_SCHEMA),
  none('PUT /attachments/:id', NO_ATTACHMENT_SCHEMA),
  none('DELETE /attachments/:id', NO_ATTACHMENT_SCHEMA),
  none('POST /attachments/:id/action', NO_ATTACHMENT_SCHEMA, { action: 'os-complete' }),

  // Group types and group specs (3.11).
  s('GET /group_types', 'group_types/list_group_types'),
  s('GET /group_types/:id', 'group_types/show_group_type'),
  s('POST /group_types', 'group_types/create_group_type'),
  s('PUT /group_types/:id', 'group_types/update_group_type'),
  s('DELETE /group_types/:id', 'group_types/delete_group_type'),
  s('GET /group_types/:id/group_specs', 'group_types/list_group_type_specs'),
  s('GET /group_types/:id/group_specs/:key', 'group_types/show_group_type_specs_item'),
  s('POST /group_types/:id/group_specs', 'group_types/create_or_update_group_type_specs'),
  s('PUT /group_types/:id/group_specs/:key', 'group_types/update_group_type_specs_item'),
  s('DELETE /group_types/:id/group_specs/:key', 'group_types/delete_group_type_specs_item'),

  // Groups (3.13) and group snapshots (3.14).
  s('POST /groups', 'groups/create_group'),
  s('GET /groups', 'groups/list_groups_no_detail'),
  s('GET /groups/detail', 'groups/list_groups_with_detail'),
  s('GET /groups/:id', 'groups/show_group'),
  s('PUT /groups/:id', 'groups/update_group'),
  act('POST /groups/:id/action', 'delete', 'groups/delete_group'),
  act('POST /groups/:id/action', 'reset_status', 'groups/reset_group_status'),
  none('POST /groups/:id/action', "group replication (3.38): tempest's groups client has no replication methods or schemas", { action: 'enable_replication' }),
  none('POST /groups/:id/action', "group replication (3.38): tempest's groups client has no replication methods or schemas", { action: 'disable_replication' }),
  none('POST /groups/:id/action', "group replication (3.38): tempest's groups client has no replication methods or schemas", { action: 'failover_replication' }),
  none('POST /groups/:id/action', "group replication (3.38): tempest's groups client has no replication methods or schemas", { action: 'list_replication_targets' }),
  act('POST /groups/action', 'create-from-src', 'groups/create_group_from_source'),
  s('POST /group_snapshots', 'group_snapshots/create_group_snapshot'),
  s('GET /group_snapshots', 'group_snapshots/list_group_snapshots_no_detail'),
  s('GET /group_snapshots/detail', 'group_snapshots/list_group_snapshots_with_detail'),
  s('GET /group_snapshots/:id', 'group_snapshots/show_group_snapshot'),
  s('DELETE /group_snapshots/:id', 'group_snapshots/delete_group_snapshot'),
  act('POST /group_snapshots/:id/action', 'reset_status', 'group_snapshots/reset_group_snapshot_status'),

  // Volume types, extra specs, access, encryption, defaults.
  s('GET /types', 'volume_types/list_volume_types'),
  s('GET /types/:id', 'volume_types/show_volume_type'),
  s('POST /types', 'volume_types/create_volume_type'),
  s('PUT /types/:id', 'volume_types/update_volume_types'),
  s('DELETE /types/:id', 'volume_types/delete_volume_type'),
  s('GET /types/:id/extra_specs', 'volume_types/list_volume_types_extra_specs'),
  s('GET /types/:id/extra_specs/:key', 'volume_types/show_volume_types_extra_specs'),
  s('POST /types/:id/extra_specs', 'volume_types/create_volume_types_extra_specs'),
  s('PUT /types/:id/extra_specs/:key', 'volume_types/update_volume_type_extra_specs'),
  s('DELETE /types/:id/extra_specs/:key', 'volume_types/delete_volume_types_extra_specs'),
  s('GET /types/:id/os-volume-type-access', 'volume_types/list_type_access'),
  act('POST /types/:id/action', 'addProjectAccess', 'volume_types/add_type_access'),
  act('POST /types/:id/action', 'removeProjectAccess', 'volume_types/remove_type_access'),
  s('GET /types/:id/encryption', 'encryption_types/show_encryption_type'),
  s('POST /types/:id/encryption', 'encryption_types/create_encryption_type'),
  s('GET /types/:id/encryption/:key', 'encryption_types/show_encryption_specs_item'),
  s('PUT /types/:id/encryption/:key', 'encryption_types/update_encryption_type'),
  s('DELETE /types/:id/encryption/:key', 'encryption_types/delete_encryption_type'),
  ...['GET /default-types', 'GET /default-types/:project', 'PUT /default-types/:project', 'DELETE /default-types/:project']
    .map((r) => none(r, 'default volume types (3.62): tempest has no client or schema for them')),

  // QoS specs (tempest's create_qos is judged by show_qos).
  s('GET /qos-specs', 'qos/list_qos'),
  s('POST /qos-specs', 'qos/show_qos'),
  s('GET /qos-specs/:id', 'qos/show_qos'),
  s('PUT /qos-specs/:id', 'qos/set_qos_key'),
  s('DELETE /qos-specs/:id', 'qos/delete_qos'),
  s('PUT /qos-specs/:id/delete_keys', 'qos/unset_qos_key'),
  s('GET /qos-specs/:id/associations', 'qos/show_association_qos'),
  s('GET /qos-specs/:id/associate', 'qos/associate_qos'),
  s('GET /qos-specs/:id/disassociate', 'qos/disassociate_qos'),
  s('GET /qos-specs/:id/disassociate_all', 'qos/disassociate_all_qos'),

  // Quotas and limits (the defaults are judged by show_quota_set, as tempest's client does).
  s('GET /os-quota-sets/:target', 'quotas/show_quota_set'),
  s('GET /os-quota-sets/:target', 'quotas/show_quota_set_usage', { flag: 'usage' }),
  s('GET /os-quota-sets/:target/defaults', 'quotas/show_quota_set'),
  s('PUT /os-quota-sets/:target', 'quotas/update_quota_set'),
  s('DELETE /os-quota-sets/:target', 'quotas/delete_quota_set'),
  s('GET /os-quota-class-sets/:name', 'quota_classes/show_quota_classes'),
  s('PUT /os-quota-class-sets/:name', 'quota_classes/update_quota_classes'),
  s('GET /limits', 'limits/show_limits'),

  // Messages (3.3).
  s('GET /messages', 'messages/list_messages'),
  s('GET /messages/:id', 'messages/show_message'),
  s('DELETE /messages/:id', 'messages/delete_message'),

  // Transfers: tempest's client uses /os-volume-transfer below 3.55 and /volume-transfers from it, with the same schemas.
  ...['/os-volume-transfer', '/volume-transfers'].flatMap((base) => [
    s(`POST ${base}`, 'transfers/create_volume_transfer'),
    s(`GET ${base}`, 'transfers/list_volume_transfers_no_detail'),
    s(`GET ${base}/detail`, 'transfers/list_volume_transfers_with_detail'),
    s(`GET ${base}/:id`, 'transfers/show_volume_transfer'),
    s(`DELETE ${base}/:id`, 'transfers/delete_volume_transfer'),
    s(`POST ${base}/:id/accept`, 'transfers/accept_volume_transfer'),
  ]),

  // The service's own inventory.
  s('GET /os-services', 'services/list_services'),
  s('PUT /os-services/enable', 'services/enable_service'),
  s('PUT /os-services/disable', 'services/disable_service'),
  s('PUT /os-services/disable-log-reason', 'services/disable_log_reason'),
  s('PUT /os-services/freeze', 'services/freeze_host'),
  s('PUT /os-services/thaw', 'services/thaw_host'),
  none('PUT /os-services/failover_host', "tempest's services client has no failover (202, no body)"),
  none('PUT /os-services/failover', "tempest's services client has no failover (3.26; 202, no body)"),
  s('GET /os-hosts', 'hosts/list_hosts'),
  s('GET /os-hosts/:host', 'hosts/show_host'),
  none('GET /os-availability-zone', "tempest's availability zone client validates no response schema"),
  s('GET /extensions', 'extensions/list_extensions'),
  s('GET /scheduler-stats/get_pools', 'scheduler_stats/get_pools_no_detail'),
  s('GET /scheduler-stats/get_pools', 'scheduler_stats/get_pools_with_detail', { flag: 'detail' }),
  s('GET /capabilities/:host', 'capabilities/show_backend_capabilities'),
  none('GET /dashboard/pool-history', "Basalt's own route (pool capacity over time, for the web dashboard, issue 18): Cinder and tempest have none"),
  none('GET /dashboard/events', "Basalt's own route (the newest status events, for the web dashboard, issue 18): Cinder and tempest have none"),
  ...['GET /clusters', 'GET /clusters/detail', 'GET /clusters/:name', 'PUT /clusters/enable', 'PUT /clusters/disable']
    .map((r) => none(r, 'clusters (3.7): tempest has no clusters client or schema')),
  none('POST /workers/cleanup', 'workers cleanup (3.24): tempest has no client or schema for it'),
];

/** The version documents, outside `/v3/{project_id}` (full Fastify paths). */
export const VERSION_SCHEMAS: Readonly<Record<string, string>> = {
  'GET /': 'versions/list_versions',
  'GET /v3': 'versions/volume_api_version_details',
};
