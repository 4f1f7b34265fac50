/**
 * Keys Cinder's views add at a microversion that tempest's schemas do not
 * describe yet. Tempest's volume clients mostly run at 3.0, so its unversioned
 * schemas stop at what 3.0 answers (its own TODOs say so: "count is added in
 * 3.45, we should move it to the 3.45 schema file"); judged strictly, the
 * real Cinder would fail them at a higher microversion too. Each row adds one
 * optional key, from the microversion Cinder adds it, to the schemas listed —
 * and nothing else, so every other key stays judged as tempest judges it.
 */

/** One key tempest's schemas lack. */
export interface TempestGap {
  /** The schemas it extends, `module/attr` (any versioned copy included). */
  readonly schemas: readonly string[];
  /** Where the key goes: `''` the body itself, `snapshot` an object under that key, `snapshots[]` each item of that array. */
  readonly at: string;
  readonly key: string;
  /** The first microversion Cinder answers it at. */
  readonly since: string;
  /** The key's JSON schema. */
  readonly type: Record<string, unknown>;
  /** Where Cinder 21 adds it. */
  readonly source: string;
}

/** tempest's `parameter_types.links` (a `*_links` list has the same shape). */
const LINKS = {
  type: 'array',
  items: { type: 'object', properties: { href: { type: 'string', format: 'uri' }, rel: { type: 'string' } }, additionalProperties: false, required: ['href', 'rel'] },
};

const SNAPSHOT_DETAIL = ['snapshots/show_snapshot', 'snapshots/create_snapshot', 'snapshots/update_snapshot'];
const SNAPSHOT_VIEW = 'cinder/api/v3/views/snapshots.py ViewBuilder.detail';

/** The table. */
export const TEMPEST_GAPS: readonly TempestGap[] = [
  ...[['group_snapshot_id', '3.14', { type: ['string', 'null'] }], ['user_id', '3.41', { type: 'string' }], ['consumes_quota', '3.65', { type: ['boolean', 'null'] }]]
    .flatMap(([key, since, type]) => [
      ...SNAPSHOT_DETAIL.map((s) => ({ schemas: [s], at: 'snapshot', key: key as string, since: since as string, type: type as Record<string, unknown>, source: SNAPSHOT_VIEW })),
      { schemas: ['snapshots/list_snapshots_with_detail'], at: 'snapshots[]', key: key as string, since: since as string, type: type as Record<string, unknown>, source: SNAPSHOT_VIEW },
    ]),
  { schemas: ['snapshots/list_snapshots_no_detail', 'snapshots/list_snapshots_with_detail'], at: '', key: 'count', since: '3.45', type: { type: 'integer' }, source: 'cinder/api/views/snapshots.py ViewBuilder._list_view (with_count)' },
  { schemas: ['volumes/list_volumes_no_detail', 'volumes/list_volumes_with_detail'], at: '', key: 'count', since: '3.45', type: { type: 'integer' }, source: 'cinder/api/v3/views/volumes.py ViewBuilder._list_view (with_count)' },
  // Cinder answers an update with the same v3 detail view as a create; tempest's versioned
  // modules add these keys to create_volume but copy update_volume unchanged.
  ...([['cluster_name', '3.61', { type: ['string', 'null'] }], ['volume_type_id', '3.63', { type: ['string', 'null'] }], ['encryption_key_id', '3.64', { type: ['string', 'null'] }],
    ['consumes_quota', '3.65', { type: 'boolean' }], ['shared_targets', '3.69', { type: ['boolean', 'null'] }]] as const)
    .map(([key, since, type]) => ({ schemas: ['volumes/update_volume'], at: 'volume', key, since, type, source: 'cinder/api/v2/volumes.py VolumeController.update: cinder/api/v3/views/volumes.py ViewBuilder.detail' })),
  // Groups and group snapshots name their project from 3.58 (GROUP_GROUPSNAPSHOT_PROJECT_ID, to admins), and page with links.
  ...([['groups/show_group', 'group'], ['groups/list_groups_with_detail', 'groups[]'],
    ['group_snapshots/show_group_snapshot', 'group_snapshot'], ['group_snapshots/list_group_snapshots_with_detail', 'group_snapshots[]']] as const)
    .map(([schema, at]) => ({ schemas: [schema], at, key: 'project_id', since: '3.58', type: { type: 'string' }, source: `cinder/api/v3/views/${schema.split('/')[0]}.py ViewBuilder.detail` })),
  { schemas: ['groups/list_groups_no_detail', 'groups/list_groups_with_detail'], at: '', key: 'group_links', since: '3.13', type: LINKS, source: 'cinder/api/v3/views/groups.py ViewBuilder._list_view' },
  { schemas: ['group_snapshots/list_group_snapshots_no_detail', 'group_snapshots/list_group_snapshots_with_detail'], at: '', key: 'group_snapshot_links', since: '3.14', type: LINKS, source: 'cinder/api/v3/views/group_snapshots.py ViewBuilder._list_view' },
  { schemas: ['messages/list_messages'], at: '', key: 'messages_links', since: '3.5', type: LINKS, source: 'cinder/api/v3/views/messages.py ViewBuilder._list_view (pagination, 3.5)' },
];
