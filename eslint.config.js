// Lint: the recommended JS and type-aware TypeScript rules, plus the one-way import rule of STYLE.md:
// nothing under src/storage or src/users/service imports Fastify.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

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
  {
    files: ['src/storage/**/*.ts', 'src/users/service.ts', 'src/config.ts', 'src/errors.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['fastify', 'fastify-*', '@fastify/*'], message: 'Storage and services stay framework-free (STYLE.md, practice 1).' }] }],
    },
  },
);
