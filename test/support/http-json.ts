/**
 * One HTTP request to a running engine with fetch: a JSON body if given, a bearer token if given;
 * the reply's status and parsed JSON body (null when empty). For tests that start real processes.
 */
export async function json(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
