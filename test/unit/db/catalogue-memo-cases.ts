/**
 * The catalogue memo (src/db/catalogue-memo.ts, migration 0027) on any
 * database: what it serves is always what the database holds. A change made
 * behind the repositories' backs (another process) is seen by the next
 * transaction; a transaction sees its own change; a change rolled back leaves
 * nothing that a later change could bring back (the token is random: a
 * counted one fails the last case).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { systemClock } from '../../../src/common/index.ts';
import { CatalogueMemo, migrateToLatest, QuotaRepository, VolumeTypeRepository, type Db } from '../../../src/db/index.ts';

const admin = { isAdmin: true, projectId: 'p1' };
const at = '2026-12-06T00:00:00.000Z';

/** The tests, each on a fresh database from `open`. */
export function catalogueMemoCases(name: string, open: () => Promise<Db>): void {
  const setUp = async (t: TestContext) => {
    const db = await open();
    t.after(() => db.close());
    await migrateToLatest(db);
    const memo = new CatalogueMemo();
    const types = new VolumeTypeRepository(systemClock, memo);
    const quotas = new QuotaRepository(systemClock, memo);
    const gold = await types.create(db.kysely, { name: 'gold', description: null, isPublic: true, extraSpecs: { tier: '1' } });
    /** The spec `tier` of gold, the project default and p1's volume limit, as one transaction reads them. */
    const seen = () => db.kysely.transaction().execute(async (tx) => ({
      tier: (await types.find(tx, 'gold', admin))?.extra_specs.tier,
      projectDefault: await types.projectDefault(tx, 'p1'),
      volumes: (await quotas.projectLimits(tx, 'p1')).volumes,
      classVolumes: (await quotas.classLimits(tx, 'default')).volumes,
    }));
    return { db, types, quotas, gold, seen };
  };

  test(`${name}: catalogue reads are kept while nothing changes, and shared frozen`, async (t) => {
    const { db, types, seen } = await setUp(t);
    assert.deepEqual(await seen(), { tier: '1', projectDefault: undefined, volumes: undefined, classVolumes: undefined });
    const [a, b] = [await types.find(db.kysely, 'gold', admin), await db.kysely.transaction().execute((tx) => types.find(tx, 'gold', admin))];
    assert.equal(a, b, 'the second read is the object the first one kept');
    assert.ok(Object.isFrozen(a) && Object.isFrozen(a!.extra_specs), 'what is kept cannot be changed by a caller');
  });

  test(`${name}: a change made outside the repositories (another process) is seen by the next read`, async (t) => {
    const { db, gold, seen, types } = await setUp(t);
    await seen();
    const k = db.kysely;
    await k.updateTable('volume_type_extra_specs').set({ value: '2' }).where('volume_type_id', '=', gold).where('key', '=', 'tier').execute();
    assert.equal((await seen()).tier, '2', 'an extra spec');
    await k.insertInto('default_volume_types').values({ project_id: 'p1', volume_type_id: gold }).execute();
    assert.equal((await seen()).projectDefault, gold, 'a project default');
    await k.insertInto('quotas').values({ project_id: 'p1', resource: 'volumes', hard_limit: 7, updated_at: at }).execute();
    assert.equal((await seen()).volumes, 7, 'a project limit');
    await k.insertInto('quota_classes').values({ class_name: 'default', resource: 'volumes', hard_limit: 9, updated_at: at }).execute();
    assert.equal((await seen()).classVolumes, 9, 'a class limit');
    const asP2 = () => k.transaction().execute(async (tx) => (await types.find(tx, 'gold', { isAdmin: false, projectId: 'p2' }))?.id);
    assert.equal(await asP2(), gold, 'a public type');
    await k.updateTable('volume_types').set({ is_public: 0 }).where('id', '=', gold).execute();
    assert.equal(await asP2(), undefined, 'made private');
    await k.insertInto('volume_type_projects').values({ volume_type_id: gold, project_id: 'p2' }).execute();
    assert.equal(await asP2(), gold, 'shared with the project');
    await k.deleteFrom('volume_types').where('id', '=', gold).execute();
    assert.equal((await seen()).tier, undefined, 'a type deleted');
  });

  test(`${name}: a transaction reads its own changes made through the repositories`, async (t) => {
    const { db, types, quotas, gold } = await setUp(t);
    await db.kysely.transaction().execute(async (tx) => {
      assert.equal((await types.find(tx, 'gold', admin))?.extra_specs.tier, '1');
      await types.setExtraSpecs(tx, gold, { tier: '3' });
      assert.equal((await types.find(tx, 'gold', admin))?.extra_specs.tier, '3', 'after setExtraSpecs');
      assert.equal(await types.projectDefault(tx, 'p1'), undefined);
      await types.setProjectDefault(tx, 'p1', gold);
      assert.equal(await types.projectDefault(tx, 'p1'), gold, 'after setProjectDefault');
      assert.equal((await quotas.projectLimits(tx, 'p1')).volumes, undefined);
      await quotas.setProjectLimits(tx, 'p1', { volumes: 4 });
      assert.equal((await quotas.projectLimits(tx, 'p1')).volumes, 4, 'after setProjectLimits');
    });
  });

  test(`${name}: a change rolled back is never served, not even after a later change`, async (t) => {
    const { db, gold, seen, types } = await setUp(t);
    await seen();
    const k = db.kysely;
    const setTier = (q: typeof k, value: string) => q.updateTable('volume_type_extra_specs').set({ value }).where('volume_type_id', '=', gold).where('key', '=', 'tier').execute();
    await assert.rejects(k.transaction().execute(async (tx) => {
      await setTier(tx, 'rolled back');
      assert.equal((await types.find(tx, 'gold', admin))?.extra_specs.tier, 'rolled back', 'the transaction sees its change');
      throw new Error('roll back');
    }), /roll back/);
    assert.equal((await seen()).tier, '1', 'the change rolled back is not seen');
    // Loaded under the rolled-back transaction's token, then a committed change: a counter would give that token again.
    await assert.rejects(k.transaction().execute(async (tx) => {
      await setTier(tx, 'rolled back');
      await types.find(tx, 'gold', admin);
      throw new Error('roll back');
    }), /roll back/);
    await setTier(k, '5');
    assert.equal((await seen()).tier, '5', 'the committed change, not the one rolled back');
  });
}
