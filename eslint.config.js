// Lint rules, including the layer rules of SPEC section 2: actors know nothing of HTTP, SQL or
// AMQP; http knows nothing of SQL or AMQP; only src/main.ts wires all layers together.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const drivers = ['pg', 'pg-*', 'amqplib', 'amqplib/*', 'ioredis', '@electric-sql/*'];

export default tseslint.config(
  { ignores: ['.dependency-cruiser.cjs', 'dist/**', 'node_modules/**', 'data/**', 'bench/results/**', 'src/http/admin/static/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    files: ['src/actors/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['**/http/**', '**/persistence/**', '**/engine/**', 'fastify', 'fastify/*', '@fastify/*', ...drivers, 'node:fs', 'node:net', 'node:http'],
            message: 'actors are pure: no HTTP, storage, drivers or I/O (SPEC section 2).' },
        ],
      }],
    },
  },
  {
    files: ['src/http/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: [...drivers], message: 'http knows nothing of SQL or AMQP (SPEC section 2).' },
          { group: ['**/persistence/*', '!**/persistence/types.js'], message: 'http may use only the persistence interface (types.js).' },
          { group: ['**/coordination/redis.js'], message: 'http uses the coordination interface; main.ts picks Redis.' },
        ],
      }],
    },
  },
  {
    files: ['src/coordination/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: ['**/http/**', '**/engine/**', '**/persistence/**', '**/actors/**', 'fastify', '@fastify/*', 'pg', 'amqplib'], message: 'coordination knows nothing of HTTP, the engine or storage.' }],
      }],
    },
  },
  {
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['**/http/**', 'fastify', '@fastify/*', ...drivers], message: 'the engine knows actors and the persistence interface only.' },
          { group: ['**/persistence/*', '!**/persistence/types.js'], message: 'the engine may use only the persistence interface (types.js).' },
        ],
      }],
    },
  },
  {
    files: ['src/persistence/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: ['**/http/**', '**/engine/**', 'fastify', '@fastify/*'], message: 'persistence knows nothing of HTTP or the engine.' }],
      }],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/config.ts'],
    rules: {
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'only src/config.ts reads process.env.' }],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', 'src/cli/**/*.ts'],
    rules: { 'no-console': 'off', '@typescript-eslint/no-non-null-assertion': 'off' },
  },
);
