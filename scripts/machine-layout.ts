// Writes src/http/admin/machine-layout.json: the section machine's statechart laid out by elkjs.
// The layout depends only on the machine definition, so it is computed here, once per change of
// the machine, instead of loading elkjs (40–50 MB that stay) into the serving process. The file
// is committed; test/admin-machine.test.ts fails while it differs from what this script writes.
// Usage: npm run layout            (writes the file)
//        npm run layout -- --check (exit 1 when the file is out of date)
import { readFileSync, writeFileSync } from 'node:fs';
import process from 'node:process';
import { sectionMachine } from '../src/actors/section-machine.js';
import { machineGraph } from '../src/http/admin/machine-graph.js';
import { layoutMachine, MACHINE_LAYOUT_FILE } from '../src/http/admin/machine-layout.js';

const text = `${JSON.stringify(await layoutMachine(machineGraph(sectionMachine)), null, 1)}\n`;
const path = MACHINE_LAYOUT_FILE;
let current = '';
try {
  current = readFileSync(path, 'utf8');
} catch {
  // missing: written below (or reported by --check)
}
if (process.argv.includes('--check')) {
  if (current !== text) {
    process.stderr.write(`${path.pathname} is out of date with the section machine: run npm run layout\n`);
    process.exit(1);
  }
  process.stdout.write('machine layout is up to date\n');
} else if (current === text) {
  process.stdout.write('machine layout unchanged\n');
} else {
  writeFileSync(path, text);
  process.stdout.write(`wrote ${path.pathname}\n`);
}
