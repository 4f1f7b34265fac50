/** The volume manager, its job kinds, the volume service, attachments and the sweeper's rules. */
export * from './volume-jobs.ts';
export * from './volume-manager.ts';
export * from './volume-service.ts';
export * from './stuck-volumes.ts';
export * from './volume-handlers.ts';
export * from './lifecycle.ts';
export * from './volume-quota.ts';
export * from './attachment-manager.ts';
export * from './connection-info.ts';
export * from './service-cleanup.ts';
export * from './transfer-manager.ts';
export * from './volume-encryption.ts';
export * from './group-jobs.ts';
export * from './group-membership.ts';
export * from './group-manager.ts';
export * from './group-handlers.ts';
export * from './group-quota.ts';
