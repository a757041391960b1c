import amqp from 'amqplib';
import { AMQP_URL } from './services.js';

/** Deletes the test run's queues, leaving the shared broker as it was. */
export async function deleteQueues(names: string[]): Promise<void> {
  const c = await amqp.connect(AMQP_URL);
  try {
    const ch = await c.createChannel();
    for (const n of names) await ch.deleteQueue(n).catch(() => undefined);
    await ch.close().catch(() => undefined);
  } finally {
    await c.close().catch(() => undefined);
  }
}
