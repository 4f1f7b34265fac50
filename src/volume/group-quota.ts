/** How groups count against quotas: the `groups` resource is the number of a project's groups. */
import type { GroupRepository } from '../db/index.ts';
import type { UsageCounter } from '../quota/index.ts';

/** Counts `groups` from the group rows and leaves every other resource to `counter`. */
export function groupUsageCounter(groups: GroupRepository, counter: UsageCounter): UsageCounter {
  return (q, projectId, resource) => (resource === 'groups' ? groups.usage(q, projectId) : counter(q, projectId, resource));
}
