/**
 * A wrapper around a real driver for the conformance suite: it may declare
 * less than the driver (a serial driver, no revert, no online extend …), may
 * make chosen calls slow, and records what ran when, so the suite can check
 * how the guard drives it. Like every wrapper it implements each method
 * explicitly (no Proxy): a method it does not know is not forwarded.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackendStats, DeclaredCapabilities, ManageReference, SnapshotRef, VolumeDriver, VolumeHandle, VolumeRef } from '../../src/drivers/index.ts';

/** One call that reached the driver. */
export interface CallRecord {
  method: string;
  /** The volume or snapshot id it was about ('' for none). */
  subject: string;
  startedMs: number;
  endedMs?: number;
}

/** What the wrapper saw. */
export interface Recorder {
  calls: CallRecord[];
  /** Most calls (management and I/O) running at once. */
  maxInFlight: number;
  /** Most I/O calls running at once on one handle. */
  maxIoPerHandle: number;
}

/** How to wrap. */
export interface InstrumentOptions {
  /** Capabilities to declare instead of the driver's (a driver may always declare less). */
  declare?: Partial<DeclaredCapabilities>;
  /** Extra time a call takes before it reaches the driver, by method and subject; default none. */
  delayMs?: (method: string, subject: string) => number;
}

/** Wraps `inner`; see the module comment. */
export function instrumented(inner: VolumeDriver, o: InstrumentOptions = {}): { driver: VolumeDriver; recorder: Recorder } {
  const recorder: Recorder = { calls: [], maxInFlight: 0, maxIoPerHandle: 0 };
  let inFlight = 0;
  const around = async <T>(method: string, subject: string, fn: () => Promise<T>): Promise<T> => {
    const record: CallRecord = { method, subject, startedMs: performance.now() };
    recorder.calls.push(record);
    recorder.maxInFlight = Math.max(recorder.maxInFlight, ++inFlight);
    try {
      const ms = o.delayMs?.(method, subject) ?? 0;
      if (ms > 0) await sleep(ms);
      return await fn();
    } finally {
      inFlight--;
      record.endedMs = performance.now();
    }
  };
  const capabilities: DeclaredCapabilities = { ...inner.capabilities, ...o.declare };
  const wrapHandle = (id: string, h: VolumeHandle): VolumeHandle => {
    let io = 0;
    const ioAround = async <T>(method: string, fn: () => Promise<T>): Promise<T> => {
      recorder.maxIoPerHandle = Math.max(recorder.maxIoPerHandle, ++io);
      try {
        return await around(method, id, fn);
      } finally {
        io--;
      }
    };
    return {
      sizeBytes: h.sizeBytes,
      ...(h.fd !== undefined ? { fd: h.fd } : {}),
      read: (offset, length) => ioAround('read', () => h.read(offset, length)),
      write: (offset, data) => ioAround('write', () => h.write(offset, data)),
      flush: () => ioAround('flush', () => h.flush()),
      ...(h.trim ? { trim: (offset: number, length: number) => ioAround('trim', () => h.trim!(offset, length)) } : {}),
      ...(h.writeZeroes ? { writeZeroes: (offset: number, length: number, mayPunch: boolean) => ioAround('writeZeroes', () => h.writeZeroes!(offset, length, mayPunch)) } : {}),
      ...(h.blockStatus ? { blockStatus: (offset: number, length: number) => ioAround('blockStatus', () => h.blockStatus!(offset, length)) } : {}),
      close: () => around('close', id, () => h.close()),
    };
  };
  const driver: VolumeDriver = {
    capabilities,
    init: () => around('init', '', () => inner.init?.() ?? Promise.resolve()),
    getStats: (): Promise<BackendStats> => around('getStats', '', () => inner.getStats()),
    createVolume: (vol: VolumeRef) => around('createVolume', vol.id, () => inner.createVolume(vol)),
    deleteVolume: (vol) => around('deleteVolume', vol.id, () => inner.deleteVolume(vol)),
    extendVolume: (vol, newSizeGiB) => around('extendVolume', vol.id, () => inner.extendVolume(vol, newSizeGiB)),
    createSnapshot: (snap: SnapshotRef) => around('createSnapshot', snap.id, () => inner.createSnapshot(snap)),
    deleteSnapshot: (snap) => around('deleteSnapshot', snap.id, () => inner.deleteSnapshot(snap)),
    createVolumeFromSnapshot: (vol, snap) => around('createVolumeFromSnapshot', vol.id, () => inner.createVolumeFromSnapshot(vol, snap)),
    cloneVolume: (vol, source) => around('cloneVolume', vol.id, () => inner.cloneVolume(vol, source)),
    // Optional methods exist exactly when declared, as the contract says.
    ...(capabilities.supportsRevertToSnapshot && inner.revertToSnapshot
      ? { revertToSnapshot: (vol: VolumeRef, snap: SnapshotRef) => around('revertToSnapshot', vol.id, () => inner.revertToSnapshot!(vol, snap)) }
      : {}),
    ...(capabilities.supportsLocalPath && inner.localPath ? { localPath: (vol: Pick<VolumeRef, 'id'>) => inner.localPath!(vol) } : {}),
    ...(capabilities.supportsNativeConnection && inner.nativeConnection
      ? { nativeConnection: (vol: Pick<VolumeRef, 'id'>) => around('nativeConnection', vol.id, () => inner.nativeConnection!(vol)) }
      : {}),
    ...(capabilities.supportsChangedExtents && inner.changedExtents
      ? { changedExtents: (vol: VolumeRef, from: SnapshotRef, to?: SnapshotRef) => around('changedExtents', vol.id, () => inner.changedExtents!(vol, from, to)) }
      : {}),
    ...(capabilities.supportsManageExisting && inner.manageExisting ? {
      manageExistingGetSize: (ref: ManageReference) => around('manageExistingGetSize', '', () => inner.manageExistingGetSize!(ref)),
      manageExisting: (vol: Pick<VolumeRef, 'id'>, ref: ManageReference) => around('manageExisting', vol.id, () => inner.manageExisting!(vol, ref)),
      unmanage: (vol: Pick<VolumeRef, 'id'>) => around('unmanage', vol.id, () => inner.unmanage!(vol)),
      manageExistingSnapshot: (snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference) => around('manageExistingSnapshot', snap.id, () => inner.manageExistingSnapshot!(snap, ref)),
      unmanageSnapshot: (snap: Pick<SnapshotRef, 'id'>) => around('unmanageSnapshot', snap.id, () => inner.unmanageSnapshot!(snap)),
      listManageableVolumes: () => around('listManageableVolumes', '', () => inner.listManageableVolumes!()),
      listManageableSnapshots: () => around('listManageableSnapshots', '', () => inner.listManageableSnapshots!()),
    } : {}),
    openVolume: async (vol) => wrapHandle(vol.id, await around('openVolume', vol.id, () => inner.openVolume(vol))),
    close: () => around('close', '', () => inner.close?.() ?? Promise.resolve()),
  };
  return { driver, recorder };
}
