// tsc emits only JavaScript: this copies every other file under src/ (the admin page's static
// files, the folder READMEs) beside it in dist/src/, so `npm run build && npm run start:prod`
// runs the same tree the Dockerfile builds.
import { cpSync, readdirSync, statSync, mkdirSync } from 'node:fs';
import process from 'node:process';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src');
const to = join(root, 'dist', 'src');
let copied = 0;
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (!name.endsWith('.ts')) {
      const dest = join(to, relative(from, path));
      mkdirSync(dirname(dest), { recursive: true });
      cpSync(path, dest);
      copied += 1;
    }
  }
};
walk(from);
process.stdout.write(`copied ${copied} non-TypeScript files into dist/src\n`);
