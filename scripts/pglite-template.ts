// Writes src/persistence/pglite-template.tar.br and pglite-template.json: an empty PGlite data
// directory made by the installed PGlite's initdb, so that a first start unpacks it instead of
// running initdb (a child peaking at 670-750 MB; docs/memory.md). Run after every PGlite upgrade:
// an engine whose PGlite differs from the manifest's falls back to initdb, and
// test/pglite-template.test.ts fails until this is run.
// Usage: npm run pglite-template
// initdb runs in a child process here too (this script's own memory stays small); the archive is
// then unpacked into a second directory and opened with PGlite before the files are written.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { PGlite } from '@electric-sql/pglite';
import { initDataDirInChild } from '../src/persistence/pglite-client.js';
import { createDataDirFromTemplate, installedPgliteVersion, packTemplate, SHIPPED_TEMPLATE } from '../src/persistence/pglite-template.js';

const work = mkdtempSync(join(tmpdir(), 'enroll-pglite-template-'));
try {
  const pglite = installedPgliteVersion();
  const made = join(work, 'initdb');
  process.stdout.write(`running initdb of PGlite ${pglite} ...\n`);
  await initDataDirInChild(made);
  const { archive, manifest } = packTemplate(made, pglite);
  const archivePath = join(work, 'template.tar.br');
  const manifestPath = join(work, 'template.json');
  writeFileSync(archivePath, archive);
  writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 1)}\n`);
  // Check the artefact as the engine will use it: unpack, open, query.
  const check = join(work, 'check');
  await createDataDirFromTemplate(check, { archive: archivePath, manifest: manifestPath }, pglite);
  const db = await PGlite.create(check);
  const version = (await db.query<{ v: string }>('SELECT version() AS v')).rows[0]?.v;
  await db.close();
  writeFileSync(SHIPPED_TEMPLATE.archive, archive);
  writeFileSync(SHIPPED_TEMPLATE.manifest, `${JSON.stringify(manifest, null, 1)}\n`);
  process.stdout.write(`wrote ${SHIPPED_TEMPLATE.archive} (${manifest.bytes} bytes, ${manifest.files} files, ${manifest.unpackedBytes} bytes unpacked; ${version})\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
