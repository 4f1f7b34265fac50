/**
 * The attach side's status changes (the 3.27 attachments API and the older
 * actions mapped onto it; `attachment-manager.ts` makes them). No job: each
 * takes effect in the request, under the volume's row lock, by compare-and-swap.
 *
 * | operation | from | to |
 * | --- | --- | --- |
 * | reserve (attachment create; `os-reserve` goes straight to attaching) | `available` (a multiattach volume also while attached) | `reserved`, `attaching` |
 * | connect (attachment update with a connector) | `reserved` | `attaching` |
 * | complete (`os-complete`, `os-attach`) | `attaching`, `reserved` | `in-use` |
 * | begin detaching / roll back (`os-begin_detaching`, `os-roll_detaching`) | `in-use` / `detaching` | `detaching` / `in-use` |
 * | detach (the last attachment deleted) | `reserved`, `attaching`, `in-use`, `detaching` | `available` |
 */
import { operation } from './operation.ts';

const statusChange = () => operation<'volume'>().status;

/** Reserving a volume for a host. */
export const volumeReserve = statusChange()({
  shape: 'status', name: 'volume.reserve', resource: 'volume',
  from: ['available'], transitional: null, to: ['reserved', 'attaching'], error: null, action: null,
});

/** A host gives its connector: the volume is attaching. */
export const volumeConnect = statusChange()({
  shape: 'status', name: 'volume.connect', resource: 'volume',
  from: ['reserved'], transitional: null, to: ['attaching'], error: null, action: null,
});

/** The host attached: the volume is in use. */
export const volumeComplete = statusChange()({
  shape: 'status', name: 'volume.complete', resource: 'volume',
  from: ['attaching', 'reserved'], transitional: null, to: ['in-use'], error: null, action: null,
});

/** `os-begin_detaching`. */
export const volumeBeginDetaching = statusChange()({
  shape: 'status', name: 'volume.begin_detaching', resource: 'volume',
  from: ['in-use'], transitional: null, to: ['detaching'], error: null, action: null,
});

/** `os-roll_detaching`. */
export const volumeRollDetaching = statusChange()({
  shape: 'status', name: 'volume.roll_detaching', resource: 'volume',
  from: ['detaching'], transitional: null, to: ['in-use'], error: null, action: null,
});

/** The volume's last attachment is deleted. */
export const volumeDetach = statusChange()({
  shape: 'status', name: 'volume.detach', resource: 'volume',
  from: ['reserved', 'attaching', 'in-use', 'detaching'], transitional: null, to: ['available'], error: null, action: null,
});
