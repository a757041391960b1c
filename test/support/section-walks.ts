import type { Intent, ModelGraph } from './section-graph.js';

/**
 * Fewer steps for the same coverage. support/section-graph.ts's transitionCoverPaths starts every
 * path from the initial state (6,849 paths, ~42,000 steps): fine on a bare actor, slow end to end
 * through HTTP and a real store. Here one greedy walk takes every transition at least once (at each
 * state an untaken transition, preferring one that leads to more untaken ones; when none is left,
 * the shortest way to the nearest state that has one), about 11,900 steps; it is then cut into
 * chunks that can run side by side, each chunk prefixed by the shortest path to where it starts.
 * The abstraction is exact, so a chunk replays from any concrete context its start state stands for.
 */

export function initialKey(graph: ModelGraph): string {
  for (const [key, path] of graph.shortest) if (path.length === 0) return key;
  throw new Error('no initial state in the graph');
}

/** One walk from the initial state that takes every edge of the graph. */
export function transitionCoverWalk(graph: ModelGraph): Intent[] {
  const untaken = new Map([...graph.edges].map(([k, out]) => [k, new Set(out.keys())]));
  let remaining = 0;
  for (const s of untaken.values()) remaining += s.size;
  const walk: Intent[] = [];
  let cur = initialKey(graph);
  const out = (k: string): Map<Intent, string> => graph.edges.get(k) ?? new Map();
  while (remaining > 0) {
    const here = untaken.get(cur) ?? new Set<Intent>();
    if (here.size > 0) {
      let best: Intent | undefined;
      let bestScore = -Infinity;
      for (const intent of here) {
        const to = out(cur).get(intent) as string;
        const n = untaken.get(to)?.size ?? 0;
        const score = (n > 0 ? 1000 : 0) + n;
        if (score > bestScore) {
          bestScore = score;
          best = intent;
        }
      }
      const intent = best as Intent;
      here.delete(intent);
      remaining -= 1;
      walk.push(intent);
      cur = out(cur).get(intent) as string;
      continue;
    }
    // Breadth-first to the nearest state with an untaken edge.
    const via = new Map<string, [string, Intent] | null>([[cur, null]]);
    const queue = [cur];
    let found: string | null = null;
    while (queue.length > 0) {
      const k = queue.shift() as string;
      if ((untaken.get(k)?.size ?? 0) > 0) {
        found = k;
        break;
      }
      for (const [intent, to] of out(k)) {
        if (!via.has(to)) {
          via.set(to, [k, intent]);
          queue.push(to);
        }
      }
    }
    if (found === null) throw new Error(`${remaining} transitions cannot be reached from ${cur}`);
    const detour: Intent[] = [];
    for (let k = found, step = via.get(k); step; k = step[0], step = via.get(k)) detour.unshift(step[1]);
    walk.push(...detour);
    cur = found;
  }
  return walk;
}

/**
 * The walk cut into `count` chunks, each replayable on a fresh section: chunk i > 0 starts with
 * the shortest path to the state where the walk's piece i begins.
 */
export function walkChunks(graph: ModelGraph, walk: Intent[], count: number): Intent[][] {
  const size = Math.ceil(walk.length / count);
  const chunks: Intent[][] = [];
  let key = initialKey(graph);
  for (let start = 0; start < walk.length; start += size) {
    const piece = walk.slice(start, start + size);
    const prefix = graph.shortest.get(key);
    if (!prefix) throw new Error(`no shortest path to ${key}`);
    chunks.push([...prefix, ...piece]);
    for (const intent of piece) key = graph.edges.get(key)?.get(intent) as string;
  }
  return chunks;
}

/** One walk from the initial state that visits every state of the graph (not every transition). */
export function stateCoverWalk(graph: ModelGraph): Intent[] {
  let cur = initialKey(graph);
  const visited = new Set([cur]);
  const walk: Intent[] = [];
  while (visited.size < graph.edges.size) {
    const via = new Map<string, [string, Intent] | null>([[cur, null]]);
    const queue = [cur];
    let found: string | null = null;
    while (queue.length > 0 && found === null) {
      const k = queue.shift() as string;
      for (const [intent, to] of graph.edges.get(k) ?? []) {
        if (via.has(to)) continue;
        via.set(to, [k, intent]);
        if (!visited.has(to)) {
          found = to;
          break;
        }
        queue.push(to);
      }
    }
    if (found === null) throw new Error(`${graph.edges.size - visited.size} states cannot be reached from ${cur}`);
    const detour: Intent[] = [];
    for (let k = found, step = via.get(k); step; k = step[0], step = via.get(k)) {
      detour.unshift(step[1]);
      visited.add(k);
    }
    walk.push(...detour);
    cur = found;
  }
  return walk;
}
