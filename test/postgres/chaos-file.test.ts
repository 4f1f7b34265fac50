/** Issue 5's cluster chaos test with file:// lock coordination (test/helpers/cluster-chaos.ts). */
import { clusterChaosTest } from '../helpers/cluster-chaos.ts';

clusterChaosTest('file');
