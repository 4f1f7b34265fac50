/**
 * The service report (what each volume service publishes through its
 * `services` row) and the rules built on it: capacity, pool matching by extra
 * specs, job targets. The front door: other folders import from here only.
 */
export {
  SERVICE_REPORT_VERSION, readReport, reporting, reportedPool, poolNamed, nbdEndpointOf, localEndpointOf, localPathOf, clusterCan, payloadVersionsOf,
  MANAGEABLE_LIMIT, manageableOf, replicatesInDriver, replicationTargetsOf, backendDownReason, type ManageableReport, nativeConnectionOf, nativeConnectionAt, nativeConnectionFor, HOME_SITE, type NativeConnectionReport,
  type ServiceReport, type PoolReport, type NbdEndpoint, type LocalEndpoint, type ReportingService, type PoolFlag,
} from './service-report.ts';
export { fits, roomFor, type PoolCapacity } from './capacity.ts';
export { matchesSpec, capabilityKey, unmetSpecs, REPLICATION_MODE_SPEC } from './pool-match.ts';
export { volumeTarget, memberTarget, targetReaders, backupTarget, backupMemberTarget, backupTargetFor, ANY_BACKUP_TARGET, type TargetReaders } from './job-targets.ts';
