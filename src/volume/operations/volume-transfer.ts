/**
 * Volume transfers' status changes (`transfer-manager.ts` makes them, in the
 * request): an offer puts an available volume in `awaiting-transfer`;
 * accepting or withdrawing it makes the volume available again (to its new or
 * its old project).
 */
import { operation } from './operation.ts';

/** Offering a volume for transfer. */
export const volumeOffer = operation<'volume'>().status({
  shape: 'status', name: 'volume.transfer_offer', resource: 'volume',
  from: ['available'], transitional: null, to: ['awaiting-transfer'], error: null, action: null,
});

/** Accepting or withdrawing the offer. */
export const volumeOfferSettled = operation<'volume'>().status({
  shape: 'status', name: 'volume.transfer_settle', resource: 'volume',
  from: ['awaiting-transfer'], transitional: null, to: ['available'], error: null, action: null,
});
