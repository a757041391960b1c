import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { createArrivalGauge } from '../src/http/arrivals.js';

/**
 * The arrival gauge tells the group commit whether anything more is on its way: a new connection
 * that has not sent its request, or a write request being handled beyond the appends already
 * waiting. Real sockets, since the counts follow connections and answers.
 */

const gauge = createArrivalGauge();
const held: ServerResponse[] = [];
const server = createServer((req, res) => {
  gauge.request(req, res);
  if (req.method !== 'GET' || req.url === '/hold') held.push(res);
  else res.end('ok');
});
gauge.watch(server);
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as AddressInfo).port;
after(() => server.close());

const until = async (cond: () => boolean, what: string) => {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};
const open = async (): Promise<Socket> => {
  const s = connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  return s;
};

describe('arrival gauge', () => {
  it('a new connection counts until its first request, and a closed one stops counting', async () => {
    assert.equal(gauge.settled(0), true, 'nothing on its way at first');
    const a = await open();
    await until(() => !gauge.settled(0), 'the connection to be counted');
    a.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => gauge.settled(0), 'its GET to settle it');
    const b = await open();
    await until(() => !gauge.settled(0), 'the second connection to be counted');
    b.destroy();
    await until(() => gauge.settled(0), 'the closed connection to stop counting');
    a.destroy();
  });

  it('a write request counts until it is answered (or its connection is gone); a read does not', async () => {
    const s = await open();
    s.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => held.length === 1, 'the GET to arrive');
    assert.equal(gauge.settled(0), true, 'a read being handled is not on its way to the store');
    held.shift()?.end();
    s.write('PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
    await until(() => held.length === 1, 'the PUT to arrive');
    assert.equal(gauge.settled(0), false, 'a write being handled, none waiting in the batch');
    assert.equal(gauge.settled(1), true, 'the write is the one waiting in the batch');
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    held.shift()?.end();
    await until(() => gauge.settled(0), 'the answered PUT to stop counting');

    s.write('DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => held.length === 1, 'the DELETE to arrive');
    assert.equal(gauge.settled(0), false, 'a DELETE is a write');
    held.shift()?.end();
    await until(() => gauge.settled(0), 'the answered DELETE to stop counting');

    s.write('PUT /y HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n');
    await until(() => held.length === 1, 'the second PUT to arrive');
    assert.equal(gauge.settled(0), false);
    s.destroy();
    await until(() => gauge.settled(0), 'a write whose connection is gone to stop counting');
    held.length = 0;
  });
});
