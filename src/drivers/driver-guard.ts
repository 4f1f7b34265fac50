/**
 * The runtime guard the core wraps around every driver. It
 * - runs `init` once before any other call (and again after it failed);
 * - applies the capability defaults once ({@link resolveCapabilities}) and
 *   refuses what the capabilities do not declare (`NOT_IMPLEMENTED`);
 * - checks the preconditions the contract promises the driver (sizes, ranges,
 *   no extend of a volume with open handles unless it is declared online);
 * - enforces the thread model: a serial driver (`canRunInParallel: false`)
 *   gets one call at a time, handle I/O included; a handle whose calls may
 *   not overlap (`canRunIoInParallel: false`) gets one call at a time;
 * - applies a timeout to every call, without letting the timeout break the
 *   thread model: a call that timed out still holds its place until the
 *   driver really returns, a queued call whose caller gave up never starts,
 *   and on a parallel driver a later call on the same volume or snapshot
 *   waits for a timed-out one still running on it;
 * - turns stray throws into `DriverError`, keeping the original as `cause`,
 *   so backend text never leaks.
 *
 * It implements every method explicitly: a new contract method must be added
 * here on purpose, never forwarded blindly.
 */
import { BasaltError, DriverError, InvalidInputError } from '../errors/index.ts';
import {
  GiB, resolveCapabilities, VOLUME_ID_PLACEHOLDER,
  type BackendStats, type ChangedExtent, type DriverCapabilities, type FailoverResult, type ManageableResource, type ManageReference, type NativeConnection, type SnapshotRef, type VolumeDriver,
  type VolumeHandle, type VolumeRef,
} from './volume-driver.ts';

/** The optional methods `supportsManageExisting` declares. */
type ManageMethod = 'manageExistingGetSize' | 'manageExisting' | 'unmanage' | 'manageExistingSnapshot' | 'unmanageSnapshot' | 'listManageableVolumes' | 'listManageableSnapshots';

const noop = (): void => undefined;

/**
 * Runs calls one at a time. A call's turn ends when the driver's promise
 * settles, not when its caller stops waiting (a timeout), so a driver that
 * cannot run two calls never sees a second one beside a slow first.
 */
class CallQueue {
  private tail: Promise<void> = Promise.resolve();

  /** Queues `start`, which returns when the call it started has ended. */
  push(start: () => Promise<void>): void {
    this.tail = this.tail.then(start).then(noop, noop);
  }

  /** Resolves once every call queued so far has ended. */
  drained(): Promise<void> {
    return this.tail;
  }
}

/** A driver behind the guard: what the core calls. */
export class GuardedDriver implements VolumeDriver {
  /** The driver's capabilities with every default applied. */
  readonly capabilities: DriverCapabilities;
  private initialised: Promise<void> | undefined;
  /** The one queue of a serial driver; undefined when calls may overlap. */
  private readonly serial: CallQueue | undefined;
  /** Volume id → handles open now (for the online-extend precondition). */
  private readonly openHandles = new Map<string, number>();
  /** Volume or snapshot key → calls on it that timed out and still run (parallel drivers). */
  private readonly abandoned = new Map<string, Set<Promise<void>>>();

  /** @param timeoutMs longest a call may take before its caller gets a retryable `DriverError`. */
  constructor(private readonly driver: VolumeDriver, private readonly timeoutMs: number) {
    this.capabilities = resolveCapabilities(driver.capabilities);
    this.serial = this.capabilities.canRunInParallel ? undefined : new CallQueue();
  }

  init(): Promise<void> {
    this.initialised ??= this.run('init', [], () => this.driver.init?.() ?? Promise.resolve()).catch((err: unknown) => {
      this.initialised = undefined; // let a later call try again
      throw err;
    });
    return this.initialised;
  }

  getStats(): Promise<BackendStats> {
    return this.call('getStats', [], () => this.driver.getStats());
  }

  createVolume(vol: VolumeRef): Promise<void> {
    return this.call('createVolume', [volumeKey(vol.id)], () => this.driver.createVolume(vol));
  }

  deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    return this.call('deleteVolume', [volumeKey(vol.id)], () => this.driver.deleteVolume(vol));
  }

  /**
   * @throws DriverError when `newSizeGiB` is not larger than the recorded size.
   * @throws BasaltError NOT_IMPLEMENTED when handles of the volume are open and the driver does not declare `supportsOnlineExtend`.
   */
  extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    if (!(newSizeGiB > vol.sizeGiB)) {
      return Promise.reject(new DriverError(`extendVolume needs a larger size than ${vol.sizeGiB} GiB`));
    }
    if (!this.capabilities.supportsOnlineExtend && (this.openHandles.get(vol.id) ?? 0) > 0) {
      return Promise.reject(new BasaltError('NOT_IMPLEMENTED', 'This backend cannot extend a volume while it is attached.'));
    }
    return this.call('extendVolume', [volumeKey(vol.id)], () => this.driver.extendVolume(vol, newSizeGiB));
  }

  createSnapshot(snap: SnapshotRef): Promise<void> {
    return this.call('createSnapshot', [snapshotKey(snap.id), volumeKey(snap.volumeId)], () => this.driver.createSnapshot(snap));
  }

  deleteSnapshot(snap: Pick<SnapshotRef, 'id'> & Partial<Pick<SnapshotRef, 'volumeId'>>): Promise<void> {
    return this.call('deleteSnapshot', [snapshotKey(snap.id)], () => this.driver.deleteSnapshot(snap));
  }

  /** @throws DriverError when the volume would be smaller than the snapshot. */
  createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    if (vol.sizeGiB < snap.sizeGiB) return Promise.reject(new DriverError(`A volume from snapshot ${snap.id} needs at least ${snap.sizeGiB} GiB`));
    return this.call('createVolumeFromSnapshot', [volumeKey(vol.id), snapshotKey(snap.id)], () => this.driver.createVolumeFromSnapshot(vol, snap));
  }

  /** @throws DriverError when the clone would be smaller than its source. */
  cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void> {
    if (vol.sizeGiB < source.sizeGiB) return Promise.reject(new DriverError(`A clone of ${source.id} needs at least ${source.sizeGiB} GiB`));
    return this.call('cloneVolume', [volumeKey(vol.id), volumeKey(source.id)], () => this.driver.cloneVolume(vol, source));
  }

  /** @throws BasaltError NOT_IMPLEMENTED when the driver does not declare `supportsRevertToSnapshot`. */
  revertToSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const revert = this.driver.revertToSnapshot;
    if (!this.capabilities.supportsRevertToSnapshot || !revert) {
      return Promise.reject(new BasaltError('NOT_IMPLEMENTED', 'This backend cannot revert a volume to a snapshot.'));
    }
    return this.call('revertToSnapshot', [volumeKey(vol.id), snapshotKey(snap.id)], () => revert.call(this.driver, vol, snap));
  }

  /**
   * The extents that may differ between `from` and `to` (or the volume now).
   * Checks the answer: sorted, not overlapping, inside the volume, safe integers.
   * @throws BasaltError NOT_IMPLEMENTED when the driver does not declare `supportsChangedExtents`;
   *   DriverError when the driver fails or answers with extents that break the contract.
   */
  /**
   * Registers `listener` for volumes the driver lost to another host (see the
   * contract); nothing for a driver that does not declare `canLoseVolumes`.
   */
  watchLostVolumes(listener: (volumeIds: readonly string[]) => void): void {
    const fn = this.driver.watchLostVolumes;
    if (this.capabilities.canLoseVolumes && fn) fn.call(this.driver, listener);
  }

  /** The backend replication method `name`, or a NOT_IMPLEMENTED refusal when the driver does not declare `supportsBackendReplication`. */
  private replicationMethod<K extends 'enableReplication' | 'replicationPoint' | 'replicationState' | 'failOver' | 'failOverVolumes'>(name: K): NonNullable<VolumeDriver[K]> {
    const fn = this.driver[name];
    if (!this.capabilities.supportsBackendReplication || !fn) throw new BasaltError('NOT_IMPLEMENTED', 'This backend does not replicate volumes itself.');
    return fn.bind(this.driver) as NonNullable<VolumeDriver[K]>;
  }

  /** Puts a volume under the backend's own replication (see the contract). @throws BasaltError NOT_IMPLEMENTED without `supportsBackendReplication`. */
  async enableReplication(vol: VolumeRef, o: { mode: 'snapshot' | 'journal' }): Promise<void> {
    const fn = this.replicationMethod('enableReplication');
    return this.call('enableReplication', [volumeKey(vol.id)], () => fn(vol, o));
  }

  /** Marks a point the target is to reach; nothing when the driver has no such method. @throws BasaltError NOT_IMPLEMENTED without `supportsBackendReplication`. */
  async replicationPoint(vol: VolumeRef): Promise<void> {
    this.replicationMethod('enableReplication'); // refuses a driver that does not replicate
    const fn = this.driver.replicationPoint;
    if (fn) await this.call('replicationPoint', [volumeKey(vol.id)], () => fn.call(this.driver, vol));
  }

  /** How a volume's replication stands (see the contract). @throws BasaltError NOT_IMPLEMENTED without `supportsBackendReplication`. */
  async replicationState(vol: VolumeRef): Promise<{ status: 'enabled' | 'copying' | 'error'; detail: string }> {
    const fn = this.replicationMethod('replicationState');
    const state = await this.call('replicationState', [volumeKey(vol.id)], () => fn(vol));
    if (!['enabled', 'copying', 'error'].includes(state?.status)) throw new DriverError(`replicationState answered ${String(state?.status)}, not enabled, copying or error`);
    return state;
  }

  /** Serves from target `backendId` (`default`: the backend's own storage), promoting `vols` there. @throws BasaltError NOT_IMPLEMENTED without `supportsBackendReplication`. */
  async failOver(backendId: string, vols: readonly VolumeRef[]): Promise<FailoverResult> {
    const fn = this.replicationMethod('failOver');
    return this.call('failOver', vols.map((v) => volumeKey(v.id)), () => fn(backendId, vols));
  }

  /** Serves just `vols` from target `backendId` (`default`: the backend's own storage again). @throws BasaltError NOT_IMPLEMENTED without `supportsBackendReplication` and the method. */
  async failOverVolumes(backendId: string, vols: readonly VolumeRef[], o: { prepare?: boolean } = {}): Promise<FailoverResult> {
    const fn = this.replicationMethod('failOverVolumes');
    return this.call('failOverVolumes', vols.map((v) => volumeKey(v.id)), () => fn(backendId, vols, o));
  }

  async changedExtents(vol: VolumeRef, from: SnapshotRef, to?: SnapshotRef): Promise<ChangedExtent[]> {
    const fn = this.driver.changedExtents;
    if (!this.capabilities.supportsChangedExtents || !fn) {
      throw new BasaltError('NOT_IMPLEMENTED', 'This backend cannot tell the changed extents of a volume.');
    }
    const keys = [volumeKey(vol.id), snapshotKey(from.id), ...(to ? [snapshotKey(to.id)] : [])];
    const extents = await this.call('changedExtents', keys, () => fn.call(this.driver, vol, from, to));
    return checkedExtents('changedExtents', extents, Math.max(vol.sizeGiB, from.sizeGiB, to?.sizeGiB ?? 0) * GiB);
  }

  /**
   * The extents of a snapshot that may hold data, checked against the contract.
   * @throws BasaltError NOT_IMPLEMENTED when the driver does not declare `supportsAllocatedExtents`;
   *   DriverError when the driver fails or answers with extents that break the contract.
   */
  async allocatedExtents(snap: SnapshotRef): Promise<ChangedExtent[]> {
    const fn = this.driver.allocatedExtents;
    if (!this.capabilities.supportsAllocatedExtents || !fn) {
      throw new BasaltError('NOT_IMPLEMENTED', 'This backend cannot tell the allocated extents of a snapshot.');
    }
    const extents = await this.call('allocatedExtents', [snapshotKey(snap.id)], () => fn.call(this.driver, snap));
    return checkedExtents('allocatedExtents', extents, snap.sizeGiB * GiB);
  }

  /** The manage method `name` of the driver, or a NOT_IMPLEMENTED refusal when it does not declare `supportsManageExisting`. */
  private manageMethod<K extends ManageMethod>(name: K): NonNullable<VolumeDriver[K]> {
    const fn = this.driver[name];
    if (!this.capabilities.supportsManageExisting || !fn) {
      throw new BasaltError('NOT_IMPLEMENTED', 'This backend cannot manage or unmanage existing storage.');
    }
    return fn.bind(this.driver) as NonNullable<VolumeDriver[K]>;
  }

  /**
   * The size in GiB of the storage `ref` names.
   * @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`.
   * @throws DriverError when the driver's answer is not a positive whole number.
   */
  async manageExistingGetSize(ref: ManageReference): Promise<number> {
    const fn = this.manageMethod('manageExistingGetSize');
    const size = await this.call('manageExistingGetSize', [], () => fn(ref));
    if (!Number.isInteger(size) || size < 1) throw new DriverError('Driver call manageExistingGetSize did not give a whole number of GiB');
    return size;
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async manageExisting(vol: Pick<VolumeRef, 'id'>, ref: ManageReference): Promise<void> {
    const fn = this.manageMethod('manageExisting');
    return this.call('manageExisting', [volumeKey(vol.id)], () => fn(vol, ref));
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async unmanage(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    const fn = this.manageMethod('unmanage');
    return this.call('unmanage', [volumeKey(vol.id)], () => fn(vol));
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async manageExistingSnapshot(snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference): Promise<void> {
    const fn = this.manageMethod('manageExistingSnapshot');
    return this.call('manageExistingSnapshot', [snapshotKey(snap.id), volumeKey(snap.volumeId)], () => fn(snap, ref));
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async unmanageSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    const fn = this.manageMethod('unmanageSnapshot');
    return this.call('unmanageSnapshot', [snapshotKey(snap.id)], () => fn(snap));
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async listManageableVolumes(): Promise<ManageableResource[]> {
    const fn = this.manageMethod('listManageableVolumes');
    return this.call('listManageableVolumes', [], () => fn());
  }

  /** @throws BasaltError NOT_IMPLEMENTED without `supportsManageExisting`. */
  async listManageableSnapshots(): Promise<ManageableResource[]> {
    const fn = this.manageMethod('listManageableSnapshots');
    return this.call('listManageableSnapshots', [], () => fn());
  }

  /**
   * The volume's path on this host.
   * @throws BasaltError NOT_IMPLEMENTED when the driver does not declare `supportsLocalPath`.
   * @throws DriverError when the driver's answer is not an absolute path.
   */
  localPath(vol: Pick<VolumeRef, 'id'>): string {
    const localPath = this.driver.localPath;
    if (!this.capabilities.supportsLocalPath || !localPath) {
      throw new BasaltError('NOT_IMPLEMENTED', 'This backend has no local paths: its volumes attach over NBD.');
    }
    let p: unknown;
    try {
      p = localPath.call(this.driver, vol);
    } catch (err) {
      throw new DriverError('Driver call localPath failed', { cause: err });
    }
    if (typeof p !== 'string' || !p.startsWith('/')) throw new DriverError('Driver call localPath did not give an absolute path');
    return p;
  }

  /**
   * The template of every volume's local path, `{volume_id}` standing for the
   * id (what the service report publishes), or undefined when the driver has
   * no local paths or its paths do not contain the id verbatim.
   */
  localPathTemplate(): string | undefined {
    if (!this.capabilities.supportsLocalPath) return undefined;
    const template = this.localPath({ id: VOLUME_ID_PLACEHOLDER });
    return template.includes(VOLUME_ID_PLACEHOLDER) ? template : undefined;
  }

  /**
   * The template of every volume's native connection info, `{volume_id}`
   * standing for the id (what the service report publishes), or undefined
   * when the driver has none now (not declared, or hosts are to use NBD).
   * With `site`: as the replication target `site` serves the volumes (see the contract).
   * @throws DriverError when the driver fails or its answer is not a
   *   connection info naming the volume by its id.
   */
  async nativeConnectionTemplate(site?: string): Promise<NativeConnection | undefined> {
    const native = this.driver.nativeConnection;
    if (!this.capabilities.supportsNativeConnection || !native) return undefined;
    const info = await this.call('nativeConnection', [], () => native.call(this.driver, { id: VOLUME_ID_PLACEHOLDER }, ...(site !== undefined ? [{ site }] : [])));
    if (info === undefined) return undefined;
    const valid = typeof info === 'object' && info !== null && typeof info.driverVolumeType === 'string' && info.driverVolumeType !== ''
      && typeof info.data === 'object' && info.data !== null && JSON.stringify(info.data).includes(VOLUME_ID_PLACEHOLDER);
    if (!valid) throw new DriverError('Driver call nativeConnection did not give a connection info naming the volume by its id');
    return { driverVolumeType: info.driverVolumeType, data: { ...info.data } };
  }

  /**
   * Opens the volume; the returned handle checks every range before the
   * driver sees it, applies the thread model and the timeout to each call,
   * and offers `fd` and `dataPlaneBackend` only when the driver's I/O may overlap.
   */
  async openVolume(vol: VolumeRef): Promise<VolumeHandle> {
    const inner = await this.call('openVolume', [volumeKey(vol.id)], () => this.driver.openVolume(vol));
    return this.guardHandle(vol.id, inner);
  }

  /**
   * Flushes the cached writes of `vols` through a handle of each, while their
   * writes still flow: advice for a caller about to hold those writes for a
   * snapshot. A snapshot writes out what is cached first (an XFS reflink
   * flushes the file's dirty pages), and under a steady load of random writes
   * that took most of the two seconds an asynchronous point held them
   * (bench/replication.ts). Done ahead, the held snapshot writes only what
   * came meanwhile. A failure is left for the snapshot itself to meet.
   */
  async flushAhead(vols: readonly VolumeRef[]): Promise<void> {
    for (const vol of vols) {
      try {
        const handle = await this.openVolume(vol);
        try {
          await handle.flush();
        } finally {
          await handle.close();
        }
      } catch { /* advice only */ }
    }
  }

  /** Closes the driver once every call it was given has ended. */
  async close(): Promise<void> {
    await this.serial?.drained();
    await Promise.all([...this.abandoned.values()].flatMap((s) => [...s]));
    await this.driver.close?.();
  }

  private guardHandle(volumeId: string, inner: VolumeHandle): VolumeHandle {
    this.openHandles.set(volumeId, (this.openHandles.get(volumeId) ?? 0) + 1);
    const caps = this.capabilities;
    // A serial driver shares its one queue with its handles; a parallel one whose
    // handle calls may not overlap gets a queue per handle.
    const queue = this.serial ?? (caps.canRunIoInParallel ? undefined : new CallQueue());
    let closed = false;
    const check = (offset: number, length: number): void => {
      if (closed) throw new DriverError(`The handle of volume ${volumeId} is closed`);
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > inner.sizeBytes) {
        throw new InvalidInputError(`Range ${offset}+${length} is outside the volume (${inner.sizeBytes} bytes)`);
      }
    };
    // Block I/O is the hot path: rather than a timer per call, one watchdog per
    // handle fails calls that outlive the timeout.
    const pending = new Map<number, { started: number; method: string; reject: (e: Error) => void }>();
    let seq = 0;
    const watchdog = setInterval(() => {
      const now = Date.now();
      for (const [k, p] of pending) {
        if (now - p.started <= this.timeoutMs) continue;
        pending.delete(k);
        p.reject(new DriverError(`Driver call ${p.method} timed out after ${this.timeoutMs} ms`, { retryable: true }));
      }
    }, Math.max(10, Math.min(1000, this.timeoutMs / 4)));
    watchdog.unref();
    const guard = <T>(method: string, fn: () => Promise<T>): Promise<T> => new Promise<T>((resolve, reject) => {
      const k = seq++;
      pending.set(k, { started: Date.now(), method, reject });
      const start = (): Promise<void> => {
        if (!pending.has(k)) return Promise.resolve(); // timed out while queued: never start it
        let running: Promise<T>;
        try {
          running = fn();
        } catch (err) {
          running = Promise.reject(err);
        }
        return running.then(
          (v) => { if (pending.delete(k)) resolve(v); },
          (err: unknown) => { if (pending.delete(k)) reject(wrap(method, err)); },
        );
      };
      if (queue) queue.push(start);
      else void start();
    });
    return {
      sizeBytes: inner.sizeBytes,
      // Native threads would overlap calls the driver said may not overlap.
      ...(inner.fd !== undefined && caps.canRunInParallel && caps.canRunIoInParallel ? { fd: inner.fd } : {}),
      ...(inner.dataPlaneBackend !== undefined && caps.canRunInParallel && caps.canRunIoInParallel ? { dataPlaneBackend: inner.dataPlaneBackend } : {}),
      read: async (offset, length) => { check(offset, length); return guard('read', () => inner.read(offset, length)); },
      write: async (offset, data) => { check(offset, data.length); return guard('write', () => inner.write(offset, data)); },
      flush: async () => { check(0, 0); return guard('flush', () => inner.flush()); },
      trim: async (offset, length) => {
        check(offset, length);
        if (inner.trim) await guard('trim', () => inner.trim!(offset, length));
      },
      writeZeroes: async (offset, length, mayPunch) => {
        check(offset, length);
        if (inner.writeZeroes) return guard('writeZeroes', () => inner.writeZeroes!(offset, length, mayPunch));
        const zero = Buffer.alloc(Math.min(length, 1024 * 1024));
        for (let done = 0; done < length; done += zero.length) {
          const n = Math.min(zero.length, length - done);
          await guard('write', () => inner.write(offset + done, n === zero.length ? zero : zero.subarray(0, n)));
        }
      },
      evict: async (offset, length) => {
        check(offset, length);
        if (inner.evict) await guard('evict', () => inner.evict!(offset, length));
      },
      blockStatus: async (offset, length) => {
        check(offset, length);
        if (!inner.blockStatus) return [{ length, hole: false, zero: false }];
        const extents = await guard('blockStatus', () => inner.blockStatus!(offset, length));
        return extents.length ? extents : [{ length, hole: false, zero: false }];
      },
      close: async () => {
        if (closed) return;
        closed = true;
        clearInterval(watchdog);
        const left = (this.openHandles.get(volumeId) ?? 1) - 1;
        if (left > 0) this.openHandles.set(volumeId, left);
        else this.openHandles.delete(volumeId);
        // After the calls queued before it, as the contract promises.
        await new Promise<void>((resolve, reject) => {
          const start = (): Promise<void> => {
            const closing = Promise.resolve().then(() => inner.close());
            this.withTimeout('close', () => closing).then(resolve, reject);
            return closing.then(noop, noop); // the queue waits for the real end
          };
          if (queue) queue.push(start);
          else void start();
        });
      },
    };
  }

  /** A management call: after `init`, then {@link run}. */
  private async call<T>(method: string, keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    await this.init();
    return this.run(method, keys, fn);
  }

  /**
   * Runs one driver call under the thread model and the timeout. The timeout
   * counts from now, waiting included; when it fires the caller gets a
   * retryable `DriverError` but the call, if it started, keeps its place: on
   * a serial driver the next call starts only when it really ends, and on a
   * parallel one so does the next call on any of `keys` (a volume or snapshot
   * it touches), since its caller will retry while it may still run.
   */
  private run<T>(method: string, keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      let running: Promise<void> | undefined;
      const timer = setTimeout(() => {
        settled = true;
        if (running && !this.serial) this.abandon(keys, running);
        reject(new DriverError(`Driver call ${method} timed out after ${this.timeoutMs} ms`, { retryable: true }));
      }, this.timeoutMs);
      const start = (): Promise<void> => {
        if (settled) return Promise.resolve(); // its caller gave up while it waited: never start it
        let call: Promise<T>;
        try {
          call = fn();
        } catch (err) {
          call = Promise.reject(err);
        }
        running = call.then(
          (v) => { if (!settled) { settled = true; clearTimeout(timer); resolve(v); } },
          (err: unknown) => { if (!settled) { settled = true; clearTimeout(timer); reject(wrap(method, err)); } },
        );
        return running;
      };
      if (this.serial) {
        this.serial.push(start);
        return;
      }
      const before = keys.flatMap((k) => [...this.abandoned.get(k) ?? []]);
      if (before.length === 0) void start();
      else void Promise.all(before).then(start);
    });
  }

  /** Remembers a timed-out call still running on `keys` until it ends. */
  private abandon(keys: readonly string[], running: Promise<void>): void {
    for (const k of keys) {
      let set = this.abandoned.get(k);
      if (!set) this.abandoned.set(k, (set = new Set()));
      set.add(running);
    }
    void running.then(() => {
      for (const k of keys) {
        const set = this.abandoned.get(k);
        set?.delete(running);
        if (set?.size === 0) this.abandoned.delete(k);
      }
    });
  }

  private async withTimeout<T>(method: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DriverError(`Driver call ${method} timed out after ${this.timeoutMs} ms`, { retryable: true })), this.timeoutMs);
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (err) {
      throw wrap(method, err);
    } finally {
      clearTimeout(timer);
    }
  }
}

function volumeKey(id: string): string {
  return `volume:${id}`;
}

function snapshotKey(id: string): string {
  return `snapshot:${id}`;
}

/** A driver's error as the core sees it: Basalt's own errors pass, anything else becomes a `DriverError`. */
function wrap(method: string, err: unknown): BasaltError {
  if (err instanceof BasaltError) return err;
  return new DriverError(`Driver call ${method} failed`, { cause: err, retryable: isTransient(err) });
}

/** System errors worth retrying: the backend may recover by itself. */
function isTransient(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EAGAIN' || code === 'EBUSY' || code === 'EINTR' || code === 'ETIMEDOUT' || code === 'EMFILE' || code === 'ENFILE';
}

/**
 * A driver's extents, if they keep the contract: sorted, not overlapping,
 * inside `limitBytes`.
 * @throws DriverError otherwise.
 */
function checkedExtents(call: string, extents: unknown, limitBytes: number): ChangedExtent[] {
  let end = 0;
  for (const e of Array.isArray(extents) ? extents as Array<ChangedExtent | undefined> : [undefined]) {
    if (!e || !Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.offset < end || e.length < 0 || e.offset + e.length > limitBytes) {
      throw new DriverError(`Driver call ${call} gave extents that are not sorted, overlap or lie outside the volume`);
    }
    end = e.offset + e.length;
  }
  return extents as ChangedExtent[];
}
