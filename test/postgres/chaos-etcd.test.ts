/** Issue 5's cluster chaos test with etcd coordination (test/helpers/cluster-chaos.ts). */
import { clusterChaosTest } from '../helpers/cluster-chaos.ts';

clusterChaosTest('etcd');
