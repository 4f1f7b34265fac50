/** The operation table, its runtime and the status unions derived from it (docs/operations.md). */
export * from './operation.ts';
export * from './runtime.ts';
export * from './table.ts';
export * from './volume-create.ts';
export * from './volume-delete.ts';
export * from './volume-extend.ts';
export * from './volume-revert.ts';
export * from './volume-retype.ts';
export * from './volume-migrate.ts';
export * from './snapshot-create.ts';
export * from './snapshot-delete.ts';
export * from './volume-attach.ts';
export * from './volume-transfer.ts';
export * from './volume-manage.ts';
export * from './volume-unmanage.ts';
export * from './snapshot-manage.ts';
export * from './snapshot-unmanage.ts';
