// Lint: the recommended JS and type-aware TypeScript rules, plus the layering of ARCHITECTURE.md: imports point
// one way, process -> app -> modules -> db -> platform, and nothing outside src/db/backend.ts reaches into a
// database adapter.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const FASTIFY = { group: ['fastify', 'fastify-*', '@fastify/*'], message: 'Below the routes stays framework-free (ARCHITECTURE.md).' };
const layer = (name, regex) => ({ regex, message: `${name} (ARCHITECTURE.md: process -> app -> modules -> db -> platform).` });
const UP_FROM_PLATFORM = layer('The platform imports no feature, database or process code', '(^|/)(modules|db|process)/|(^|/)app\\.ts$');
const UP_FROM_DB = layer('The database layer imports no feature or process code', '(^|/)(modules|process)/|(^|/)app\\.ts$');
const UP_FROM_MODULES = layer('Feature modules import no process code', '(^|/)process/|(^|/)app\\.ts$');
const ADAPTERS = layer('Only src/db/backend.ts opens an adapter', '(^|/)db/(postgres|cassandra)/');

const restrict = (files, patterns) => ({
  files, rules: { 'no-restricted-imports': ['error', { patterns }] },
});

export default tseslint.config(
  { ignores: ['node_modules/', 'data/', 'coverage/', 'docs/', 'scratch/', '.scratch-*/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  // One block per layer; a later block that matches the same file replaces the earlier one's patterns, so the
  // narrower, stricter blocks come last.
  restrict(['src/platform/**/*.ts'], [UP_FROM_PLATFORM]),
  restrict(['src/platform/errors.ts', 'src/platform/config.ts', 'src/platform/probes.ts', 'src/platform/lib/**/*.ts'],
    [UP_FROM_PLATFORM, FASTIFY]),
  restrict(['src/db/**/*.ts'], [UP_FROM_DB, FASTIFY]),
  // The one Fastify plugin of the layer: it registers the backend on the app.
  restrict(['src/db/plugin.ts'], [UP_FROM_DB]),
  restrict(['src/modules/**/*.ts'], [UP_FROM_MODULES, ADAPTERS]),
  restrict(['src/modules/*/service.ts'], [UP_FROM_MODULES, ADAPTERS, FASTIFY]),
  restrict(['src/app.ts', 'src/process/**/*.ts', 'src/cli/**/*.ts'], [ADAPTERS]),
);
