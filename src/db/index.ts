/** The database: schema types, migrations and the opener. */
export * from './schema.ts';
export { openDatabase, migrateToLatest, migrationStatus, type Db, type OpenDatabaseOptions } from './database.ts';
export { GroupCommit, type Flush } from './group-commit.ts';
export { listenWithReconnect, type ListenerLog, type ListenerOptions } from './notification-listener.ts';
export * from './resource-repository.ts';
export * from './volume-repository.ts';
export * from './service-repository.ts';
export * from './message-repository.ts';
export * from './keyset.ts';
export * from './quota-repository.ts';
export * from './volume-type-repository.ts';
export * from './qos-repository.ts';
export * from './snapshot-repository.ts';
export * from './attachment-repository.ts';
export * from './type-encryption-repository.ts';
export * from './group-type-repository.ts';
export * from './group-repository.ts';
export * from './group-snapshot-repository.ts';
