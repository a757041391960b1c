/**
 * Layer rules of SPEC section 2, checked on the real import graph (eslint checks the same rules
 * per file): actors know nothing of HTTP, SQL or AMQP; http knows nothing of SQL or AMQP and uses
 * persistence only through its interface; no circular imports anywhere in src/.
 */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'circular imports make start-up order fragile', from: { path: '^src' }, to: { circular: true } },
    {
      name: 'actors-are-pure',
      severity: 'error',
      from: { path: '^src/actors' },
      to: { path: ['^src/(http|persistence|engine)', 'node_modules/(pg|amqplib|ioredis|fastify|@fastify|@electric-sql)/'] },
    },
    {
      name: 'http-knows-no-storage',
      severity: 'error',
      from: { path: '^src/http' },
      to: { path: ['node_modules/(pg|amqplib|ioredis|@electric-sql)/', '^src/persistence/(?!types\\.ts$)', '^src/coordination/redis\\.ts$'] },
    },
    {
      name: 'coordination-stands-alone',
      severity: 'error',
      comment: 'rate limits and revocations know nothing of HTTP, the engine or persistence',
      from: { path: '^src/coordination' },
      to: { path: ['^src/(http|engine|persistence|actors|metrics)', 'node_modules/(pg|amqplib|fastify|@fastify|@electric-sql)/'] },
    },
    {
      name: 'engine-knows-interfaces-only',
      severity: 'error',
      from: { path: '^src/engine' },
      to: { path: ['^src/http', 'node_modules/(pg|amqplib|ioredis|fastify|@fastify|@electric-sql)/', '^src/persistence/(?!types\\.ts$)'] },
    },
    // The engine's roles (src/engine/README.md): the use cases and the facade compose the rest; the
    // section host and the student directory know nothing of each other, of durability or of storage.
    {
      name: 'section-host-hosts-only',
      severity: 'error',
      comment: 'the section host spawns, restores, passivates and routes; it knows no students, durability or storage',
      from: { path: '^src/engine/section-host\\.ts$' },
      to: { path: ['^src/engine/(?!views\\.ts$)', '^src/persistence'] },
    },
    {
      name: 'student-directory-knows-students-only',
      severity: 'error',
      from: { path: '^src/engine/student-(directory|mailbox)\\.ts$' },
      to: { path: ['^src/engine/(section-host|durability-tracker|enrollment|engine|views)\\.ts$', '^src/persistence'] },
    },
    {
      name: 'durability-tracker-below-use-cases',
      severity: 'error',
      comment: 'the tracker rolls the host and the directory back; it never runs a use case',
      from: { path: '^src/engine/durability-tracker\\.ts$' },
      to: { path: '^src/engine/(enrollment|engine)\\.ts$' },
    },
    {
      name: 'use-cases-below-facade',
      severity: 'error',
      from: { path: '^src/engine/(enrollment|views)\\.ts$' },
      to: { path: '^src/engine/engine\\.ts$' },
    },
    {
      name: 'no-layout-engine-when-serving',
      severity: 'error',
      comment: 'the statechart layout is precomputed (npm run layout); routes use its type only, so elkjs never loads in the server',
      from: { path: '^src/http/admin/routes\\.ts$' },
      to: { path: '^src/http/admin/machine-layout\\.ts$', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'notices-know-interfaces-only',
      severity: 'error',
      comment: 'src/notices: the engine facade and the persistence interfaces only (issue 16)',
      from: { path: '^src/notices' },
      to: { path: ['^src/http', 'node_modules/(pg|amqplib|ioredis|fastify|@fastify|@electric-sql)/', '^src/persistence/(?!(types|notice-types)\\.ts$)', '^src/engine/(?!engine\\.ts$)'] },
    },
    {
      name: 'persistence-knows-no-http',
      severity: 'error',
      from: { path: '^src/persistence' },
      to: { path: ['^src/(http|engine)', 'node_modules/(fastify|@fastify)/'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.js'] },
  },
};
