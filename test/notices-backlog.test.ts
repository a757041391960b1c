import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { C, S } from './support/http-fixture.js';
import { MemoryPersistence } from './support/memory-persistence.js';
import { startNoticesWorld } from './support/notices-world.js';

/**
 * Probe K: each student event stream whose client stays connected but stops reading (a suspended
 * laptop, a phone's background tab) held up to 1 MiB of notices in the engine's memory; 3,016 such
 * streams took the engine from 198 MiB to 1.5 GB. All streams together now share one budget: a
 * stream that stopped reading is dropped once its share is queued (it resumes with Last-Event-ID
 * when its client comes back), and one that reads gets every notice.
 *
 * Over a Unix socket: its kernel buffers are a few hundred KB (a loopback TCP socket's grow to
 * megabytes), so what a client does not read reaches the engine's memory after a few hundred notices.
 */
describe('student event streams whose clients stop reading', () => {
  test('are dropped within their share of one memory budget; a stream that reads gets every notice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'notices-backlog-'));
    const socketPath = join(dir, 'engine.sock');
    const w = await startNoticesWorld({ persistence: new MemoryPersistence(), seed: true, streamBacklogBudgetBytes: 256 * 1024, socketPath });
    const clients: net.Socket[] = [];
    try {
      const token = w.token(S.alice);
      const [courseId, groupId] = C.physics as [number, number];
      const enroll = await w.app.inject({ method: 'PUT', url: '/student/course', headers: { authorization: `Bearer ${token}` }, payload: { course_id: courseId, group_id: groupId } });
      assert.equal(enroll.statusCode, 204, enroll.body);
      // One stream that reads (counting its notices), three that stop reading once they are open.
      let told = 0;
      const reader = http.get({ socketPath, path: '/me/events', headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
      await new Promise<void>((resolve, reject) => {
        reader.once('error', reject);
        reader.once('response', (res) => {
          if (res.statusCode !== 200) reject(new Error(`the reading stream was refused: ${res.statusCode}`));
          let tail = '';
          res.on('data', (d: Buffer) => {
            const text = tail + d.toString('utf8');
            told += text.split('"kind":"sectionChanged"').length - 1;
            tail = text.slice(-40);
            if (text.includes('event: ready')) resolve();
          });
        });
      });
      for (let i = 0; i < 3; i++) {
        const s = net.connect(socketPath);
        clients.push(s);
        await new Promise<void>((resolve, reject) => {
          let seen = '';
          s.on('data', (d: Buffer) => {
            seen += d.toString('latin1');
            if (!seen.startsWith('HTTP/1.1 200')) reject(new Error(`the stream was refused: ${seen.slice(0, 40)}`));
            if (seen.includes('event: ready')) {
              // From here on this client reads nothing: what is sent to it piles up.
              s.pause();
              s.removeAllListeners('data');
              resolve();
            }
          });
          s.once('error', reject);
          s.write(`GET /me/events HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${token}\r\n\r\n`);
        });
      }
      assert.equal(w.hub.openStreams, 4);
      // Staff change the section again and again: a notice of about 2 KB to each of alice's streams.
      const staff = w.token(900, 'staff');
      const changes = 300;
      for (let i = 0; i < changes; i++) {
        const r = await w.app.inject({ method: 'PATCH', url: `/sections/${courseId}/${groupId}`, headers: { authorization: `Bearer ${staff}` }, payload: { notes: `${i} `.padEnd(2000, 'x') } });
        assert.equal(r.statusCode, 200, r.body);
      }
      const end = performance.now() + 10_000;
      while ((told < changes || w.hub.openStreams > 1) && performance.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(told, changes, 'every change told to the stream that reads');
      assert.equal(w.hub.openStreams, 1, 'the three streams that stopped reading were dropped (about 600 KB sent to each)');
      reader.destroy();
    } finally {
      for (const s of clients) s.destroy();
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
