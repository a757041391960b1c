import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, sep } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { constants as zc, brotliCompressSync, createBrotliDecompress } from 'node:zlib';

/**
 * A ready-made empty PGlite data directory, shipped beside this module, so that a first start does
 * not run initdb. PGlite's initdb needs a second PostgreSQL instance and the separate initdb
 * WebAssembly program (a child process peaking at 670-750 MB for several seconds, see
 * docs/memory.md); unpacking this artefact is streamed (no 40 MB buffer), takes about a second and
 * adds 20-30 MB for that second, early in the start, far below the engine's later peak.
 *
 * The artefact is a ustar archive of the directory initdb created, compressed with brotli
 * (`pglite-template.tar.br`), and a manifest (`pglite-template.json`) naming the PGlite version
 * that created it, the archive's SHA-256 and what it holds. It is used only when the installed
 * PGlite is that version and every check passes; anything else falls back to initdb (the caller
 * decides). `npm run pglite-template` regenerates both files; a test fails while they are stale.
 *
 * Why not PGlite's `loadDataDir`: it unpacks into the data directory itself, so a crash half-way
 * leaves a directory with `PG_VERSION` that later starts would take for a database. Here the
 * archive is unpacked into a sibling staging directory which is renamed into place only once
 * complete and verified.
 */

/** What the manifest says about the artefact (`pglite-template.json`). */
export interface TemplateManifest {
  /** Layout of this manifest and archive; bumped if either changes meaning. */
  format: 1;
  /** `@electric-sql/pglite` version whose initdb created the directory. */
  pglite: string;
  /** Contents of the directory's PG_VERSION (PostgreSQL major version). */
  pgVersion: string;
  /** SHA-256 of the compressed archive, hex. */
  sha256: string;
  /** Size of the compressed archive, bytes. */
  bytes: number;
  files: number;
  dirs: number;
  /** Sum of the file sizes, bytes. */
  unpackedBytes: number;
}

/** Where the artefact is: the shipped one by default (beside this module, in src/ and dist/). */
export interface TemplatePaths {
  archive: string;
  manifest: string;
}

const here = dirname(fileURLToPath(import.meta.url));

/** The artefact shipped with the engine (copied into dist/ by the build like every non-TS file). */
export const SHIPPED_TEMPLATE: TemplatePaths = {
  archive: join(here, 'pglite-template.tar.br'),
  manifest: join(here, 'pglite-template.json'),
};

const FORMAT = 1;
const BLOCK = 512;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

/** The installed `@electric-sql/pglite` version (its package.json is not exported: found beside its entry point). */
export function installedPgliteVersion(): string {
  let dir = dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite'));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const json = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string; version?: string };
      if (json.name === '@electric-sql/pglite' && json.version) return json.version;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the installed @electric-sql/pglite package.json');
    dir = up;
  }
}

// ---- ustar ------------------------------------------------------------------------------------

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(value.toString(8).padStart(len - 1, '0'), off, len - 1, 'ascii');
  buf[off + len - 1] = 0;
}

function header(name: string, type: '0' | '5', size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`path too long for the template archive: ${name}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, type === '5' ? DIR_MODE : FILE_MODE);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, 0);
  h.write(type, 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return h;
}

/**
 * Packs `dir` (an initdb'd data directory) into the template artefact: entries sorted, modes 0700 /
 * 0600, owner 0, time 0, so the same directory always gives the same bytes. Returns the archive and
 * its manifest. Used by `npm run pglite-template` (scripts/pglite-template.ts).
 */
export function packTemplate(dir: string, pglite: string): { archive: Buffer; manifest: TemplateManifest } {
  const parts: Buffer[] = [];
  let files = 0;
  let dirs = 0;
  let unpackedBytes = 0;
  const walk = (path: string): void => {
    for (const name of readdirSync(path).sort()) {
      const full = join(path, name);
      const rel = relative(dir, full).split(sep).join('/');
      const st = statSync(full);
      if (st.isDirectory()) {
        parts.push(header(`${rel}/`, '5', 0));
        dirs += 1;
        walk(full);
      } else if (st.isFile()) {
        const data = readFileSync(full);
        parts.push(header(rel, '0', data.length), data);
        const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
        if (pad) parts.push(Buffer.alloc(pad));
        files += 1;
        unpackedBytes += data.length;
      } else {
        throw new Error(`not a file or directory: ${full}`);
      }
    }
  };
  walk(dir);
  parts.push(Buffer.alloc(2 * BLOCK));
  const tar = Buffer.concat(parts);
  const archive = brotliCompressSync(tar, {
    params: { [zc.BROTLI_PARAM_QUALITY]: 11, [zc.BROTLI_PARAM_LGWIN]: 24, [zc.BROTLI_PARAM_SIZE_HINT]: tar.length },
  });
  const pgVersion = readFileSync(join(dir, 'PG_VERSION'), 'utf8').trim();
  const sha256 = createHash('sha256').update(archive).digest('hex');
  return { archive, manifest: { format: FORMAT, pglite, pgVersion, sha256, bytes: archive.length, files, dirs, unpackedBytes } };
}

/**
 * Streams a ustar archive into `dest`: regular files and directories only, no absolute or `..`
 * paths, every header checksum verified, and the end-of-archive marker required (a truncated
 * archive is an error, not a shorter directory).
 */
class TarSink extends Writable {
  files = 0;
  dirs = 0;
  bytes = 0;
  ended = false;
  private pending: Buffer = Buffer.alloc(0);
  private fd: number | null = null;
  private left = 0;
  private pad = 0;
  constructor(private readonly dest: string) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    try {
      this.consume(chunk);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.closeFile();
    cb(this.ended && this.left === 0 ? null : new Error('the template archive is truncated'));
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.closeFile();
    cb(err);
  }
  private closeFile(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
  private consume(chunk: Buffer): void {
    let data = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    while (data.length > 0) {
      if (this.ended) {
        if (data.some((b) => b !== 0)) throw new Error('data after the end of the template archive');
        return;
      }
      if (this.left > 0) {
        const n = Math.min(this.left, data.length);
        writeSync(this.fd as number, data, 0, n);
        this.left -= n;
        data = data.subarray(n);
        if (this.left === 0) this.closeFile();
        continue;
      }
      if (this.pad > 0) {
        const n = Math.min(this.pad, data.length);
        this.pad -= n;
        data = data.subarray(n);
        continue;
      }
      if (data.length < BLOCK) {
        this.pending = Buffer.from(data);
        return;
      }
      this.entry(data.subarray(0, BLOCK));
      data = data.subarray(BLOCK);
    }
  }
  private entry(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      this.ended = true;
      return;
    }
    const field = (off: number, len: number): string => h.toString('utf8', off, off + len).replace(/\0.*$/s, '');
    const num = (off: number, len: number): number => {
      const s = field(off, len).trim();
      if (!/^[0-7]+$/.test(s)) throw new Error('malformed header in the template archive');
      return parseInt(s, 8);
    };
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    if (num(148, 8) !== sum || field(257, 6) !== 'ustar') throw new Error('bad header checksum in the template archive');
    const prefix = field(345, 155);
    const name = (prefix ? `${prefix}/` : '') + field(0, 100);
    const type = field(156, 1) || '0';
    const size = num(124, 12);
    const parts = name.split('/').filter((p) => p !== '' && p !== '.');
    if (name.startsWith('/') || parts.length === 0 || parts.includes('..')) throw new Error(`unsafe path in the template archive: ${name}`);
    const target = join(this.dest, ...parts);
    if (type === '5') {
      mkdirSync(target, { recursive: true, mode: DIR_MODE });
      this.dirs += 1;
    } else if (type === '0') {
      mkdirSync(dirname(target), { recursive: true, mode: DIR_MODE });
      this.fd = openSync(target, 'wx', FILE_MODE);
      this.left = size;
      this.pad = (BLOCK - (size % BLOCK)) % BLOCK;
      this.files += 1;
      this.bytes += size;
      if (size === 0) this.closeFile();
    } else {
      throw new Error(`unexpected entry type '${type}' in the template archive`);
    }
  }
}

/** Why the template was not used; the caller falls back to initdb. */
export class TemplateUnusable extends Error {}

/**
 * Reads and checks the manifest and the archive: the installed PGlite must be the version that
 * created it, and the archive's size and SHA-256 must match. Throws {@link TemplateUnusable}.
 */
function readChecked(paths: TemplatePaths, pglite: string): { archive: Buffer; manifest: TemplateManifest } {
  let manifest: TemplateManifest;
  let archive: Buffer;
  try {
    manifest = JSON.parse(readFileSync(paths.manifest, 'utf8')) as TemplateManifest;
    archive = readFileSync(paths.archive);
  } catch (err) {
    throw new TemplateUnusable(`cannot read the template: ${(err as Error).message}`);
  }
  if (manifest.format !== FORMAT) throw new TemplateUnusable(`template format ${String(manifest.format)}, expected ${FORMAT}`);
  if (manifest.pglite !== pglite) throw new TemplateUnusable(`template made by PGlite ${manifest.pglite}, installed ${pglite}`);
  const sha256 = createHash('sha256').update(archive).digest('hex');
  if (archive.length !== manifest.bytes || sha256 !== manifest.sha256) throw new TemplateUnusable('template archive does not match its manifest (size or SHA-256)');
  return { archive, manifest };
}

/**
 * Creates the data directory `dataDir` from the template: unpacks it into `<dataDir>.template-staging`
 * (removed first if a crashed start left one), checks that what came out is what the manifest
 * lists, then renames it into place, so `dataDir` either does not change or holds the whole
 * directory. `dataDir` must be missing or empty. Throws {@link TemplateUnusable} (with the reason,
 * nothing left behind) when the template cannot be used.
 */
export async function createDataDirFromTemplate(dataDir: string, paths: TemplatePaths = SHIPPED_TEMPLATE, pglite = installedPgliteVersion()): Promise<TemplateManifest> {
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) throw new TemplateUnusable(`${dataDir} is not empty`);
  const { archive, manifest } = readChecked(paths, pglite);
  const staging = join(dirname(dataDir), `${basename(dataDir)}.template-staging`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true, mode: DIR_MODE });
  try {
    const sink = new TarSink(staging);
    try {
      await pipeline(Readable.from([archive]), createBrotliDecompress(), sink);
    } catch (err) {
      throw new TemplateUnusable(`cannot unpack the template: ${(err as Error).message}`);
    }
    if (sink.files !== manifest.files || sink.dirs !== manifest.dirs || sink.bytes !== manifest.unpackedBytes) {
      throw new TemplateUnusable(`the template unpacked to ${sink.files} files / ${sink.dirs} directories / ${sink.bytes} bytes, its manifest lists ${manifest.files} / ${manifest.dirs} / ${manifest.unpackedBytes}`);
    }
    const pgVersion = existsSync(join(staging, 'PG_VERSION')) ? readFileSync(join(staging, 'PG_VERSION'), 'utf8').trim() : null;
    if (pgVersion !== manifest.pgVersion) throw new TemplateUnusable(`the template's PG_VERSION is ${String(pgVersion)}, its manifest says ${manifest.pgVersion}`);
    if (existsSync(dataDir)) rmdirSync(dataDir);
    renameSync(staging, dataDir);
    return manifest;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
