/** Queries on `messages` (user messages, Cinder 3.3). */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import { afterMarker, keysetExpression, keysetKeys, type KeysetKey, type KeysetTable } from './keyset.ts';
import type { Database, MessageRow } from './schema.ts';
import type { ProjectScope } from './resource-repository.ts';

type Q = Kysely<Database>;

/** Columns a message list may sort by. */
export type MessageSortColumn = 'created_at' | 'id' | 'event_id' | 'resource_type' | 'message_level';
/** Sort keys clients may use. */
export const MESSAGE_SORT_KEYS: Record<string, MessageSortColumn> = {
  created_at: 'created_at', id: 'id', event_id: 'event_id', resource_type: 'resource_type', message_level: 'message_level',
};
const MESSAGE_KEYSET: KeysetTable<MessageSortColumn> = { table: 'messages', nullable: new Set() };

/** Filters a message list understands (exact matches). */
export interface MessageFilter {
  scope: ProjectScope;
  resource_uuid?: string;
  resource_type?: string;
  event_id?: string;
  request_id?: string;
  message_level?: string;
}

/** Repository over user messages. Expired messages are invisible. */
export class MessageRepository {
  constructor(private readonly clock: Clock) {}

  /** The unexpired message, if it exists within `scope`. */
  async get(q: Q, id: string, scope: ProjectScope): Promise<MessageRow | undefined> {
    let s = q.selectFrom('messages').selectAll().where('id', '=', id).where('expires_at', '>', isoAt(this.clock.now()));
    if (scope !== 'all') s = s.where('project_id', '=', scope.projectId);
    return s.executeTakeFirst();
  }

  /** Lists unexpired messages in keyset order after `marker`. */
  async list(q: Q, f: MessageFilter, sort: KeysetKey<MessageSortColumn>[], limit: number, marker?: MessageRow, offset = 0): Promise<MessageRow[]> {
    let s = q.selectFrom('messages').selectAll().where('expires_at', '>', isoAt(this.clock.now()));
    if (f.scope !== 'all') s = s.where('project_id', '=', f.scope.projectId);
    for (const k of ['resource_uuid', 'resource_type', 'event_id', 'request_id', 'message_level'] as const) {
      const v = f[k];
      if (v !== undefined) s = s.where(k, '=', v);
    }
    const keys = keysetKeys(sort);
    if (marker) s = s.where(afterMarker(MESSAGE_KEYSET, keys, marker));
    for (const k of keys) s = s.orderBy(keysetExpression(MESSAGE_KEYSET, k.column), k.dir);
    s = s.limit(limit);
    return (offset > 0 ? s.offset(offset) : s).execute();
  }

  /** Deletes a message; false if it was absent. */
  async delete(q: Q, id: string): Promise<boolean> {
    const r = await q.deleteFrom('messages').where('id', '=', id).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  /** Deletes expired messages (a sweep rule); returns how many. */
  async pruneExpired(q: Q): Promise<number> {
    const r = await q.deleteFrom('messages').where('expires_at', '<=', isoAt(this.clock.now())).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
