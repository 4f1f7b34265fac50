/**
 * Volume retype in place (`os-retype` without migration): the volume gets
 * another type where it is, at once, when its pool meets the new type's extra
 * specs; its per-type quota moves in the same transaction. A retype that
 * would move the volume or re-encrypt its data is refused until migration
 * exists (issue 12, part 5).
 *
 * | | |
 * | --- | --- |
 * | starts from | `available`, `in-use`; not in a group |
 * | transitional | none: the change takes effect in the request |
 * | ends in | the same status |
 * | error | none (no job) |
 * | jobs | none |
 */
import { InvalidInputError } from '../../errors/index.ts';
import { reportedPool, unmetSpecs } from '../../services/index.ts';
import { typeNameOf } from '../volume-quota.ts';
import { isMultiattachType } from '../volume-type-flags.ts';
import { operation } from './operation.ts';

/** What a retype request says. */
export interface RetypeVolumeInput { newType: string; migrationPolicy: 'never' | 'on-demand' }

/** The in-place volume retype operation. */
export const volumeRetype = operation<'volume', never, RetypeVolumeInput>().change({
  shape: 'change',
  name: 'volume.retype',
  resource: 'volume',
  from: ['available', 'in-use'],
  transitional: null,
  to: ['available', 'in-use'],
  error: null,
  action: null,

  refusal: (v) => `Invalid volume: Volume ${v.id} status must be available or in-use to retype, but current status is: ${v.status}.`,

  async check({ tx, caller, deps, look }, v, input) {
    if (v.group_id) throw new InvalidInputError(`Invalid input received: Volume ${v.id} belongs to a group; remove it from the group first.`);
    const type = await look.resolveType(tx, caller, input.newType);
    if (type.id === v.volume_type_id) throw new InvalidInputError('Invalid input received: New volume_type same as original.');
    await deps.typeEncryption.lockType(tx, type.id, 'share');
    if (!(await deps.typeEncryption.sameEncryption(tx, v.volume_type_id, type.id))) {
      // The data would have to be copied through a new encryption layer (Cinder migrates for it).
      throw new InvalidInputError(`Invalid input received: volume type ${type.name} encrypts volumes differently from the volume's type; `
        + (input.migrationPolicy === 'on-demand' ? 'retype with migration is not supported by this Basalt release.' : "the volume would have to be copied, which migration_policy 'never' forbids."));
    }
  },

  async request({ tx, caller, deps, look }, v, input) {
    const type = await look.resolveType(tx, caller, input.newType);
    const reported = v.host ? await reportedPool(tx, v.host) : undefined;
    const unmet = reported ? unmetSpecs(reported.report, reported.pool, type.extra_specs) : [];
    if (!reported || unmet.length > 0) {
      throw new InvalidInputError(`Invalid input received: pool ${v.host} does not meet volume type ${type.name}${unmet.length ? ` (${unmet.join(', ')})` : ''}; `
        + (input.migrationPolicy === 'on-demand' ? 'retype with migration is not supported by this Basalt release.' : "the volume would have to move, which migration_policy 'never' forbids."));
    }
    const oldName = await typeNameOf(deps.types, tx, v.volume_type_id);
    // Only the per-type resources move: the totals stay the same.
    await deps.quotas.consume(tx, v.project_id, { [`volumes_${type.name}`]: 1, [`gigabytes_${type.name}`]: v.size }, v.size);
    if (oldName) await deps.quotas.release(tx, v.project_id, { [`volumes_${oldName}`]: 1, [`gigabytes_${oldName}`]: v.size });
    const multiattach = isMultiattachType(type) ? 1 : 0;
    if (v.status === 'in-use' && multiattach !== v.multiattach) {
      throw new InvalidInputError('Invalid input received: an in-use volume cannot change between multiattach and single-attach types; detach it first.');
    }
    return { set: { volume_type_id: type.id, multiattach } };
  },
});
