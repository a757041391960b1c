import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createMachine, type AnyStateMachine, type AnyStateNode } from 'xstate';
import { sectionMachine } from '../src/actors/section-machine.js';
import { activeStateIds, machineGraph, toMermaid, type MachineGraph } from '../src/http/admin/machine-graph.js';
import { layoutMachine, MACHINE_LAYOUT_FILE, type MachineLayout } from '../src/http/admin/machine-layout.js';
import { createHttpFixture, PW_HASH, STAFF } from './support/http-fixture.js';

/**
 * The admin statechart and the Mermaid export are derived from the machine definition. These tests
 * walk the definition themselves (independently of the code under test) and check that every state
 * node and every transition shows up in the derived graph, in the laid-out drawing the page renders
 * (as served by the API) and in the Mermaid text, so the pictures can never drift from the machine.
 */

interface WalkedState {
  id: string;
  path: string;
  parent: string | null;
}
interface WalkedTransition {
  source: string;
  event: string;
  target: string | null;
  guard: string | null;
}

const guardName = (g: unknown): string | null => {
  if (g === undefined) return null;
  if (typeof g === 'string') return g;
  // and([...]) of named guards reads `a && b`.
  const parts = (g as { guards?: unknown[] }).guards;
  if (typeof g === 'function' && g.name === 'and' && Array.isArray(parts)) return parts.map((p) => guardName(p)).join(' && ');
  return (g as { type?: string }).type ?? 'inline guard';
};

/** The test's own walk over `machine.root`: states, event transitions, `always` and `initial`. */
function walk(machine: AnyStateMachine): { states: WalkedState[]; transitions: WalkedTransition[] } {
  const states: WalkedState[] = [];
  const transitions: WalkedTransition[] = [];
  const rootDepth = machine.root.path.length;
  const visit = (node: AnyStateNode, parent: string | null): void => {
    states.push({ id: node.id, path: node.path.slice(rootDepth).join('.'), parent });
    const children = Object.values(node.states) as AnyStateNode[];
    if (children.length > 0) {
      for (const t of node.initial.target) transitions.push({ source: node.id, event: 'initial', target: t.id, guard: null });
    }
    for (const [event, defs] of node.transitions) {
      for (const d of defs) {
        const targets = d.target ?? [];
        if (targets.length === 0) transitions.push({ source: node.id, event, target: null, guard: guardName(d.guard) });
        for (const t of targets) transitions.push({ source: node.id, event, target: t.id, guard: guardName(d.guard) });
      }
    }
    for (const d of node.always ?? []) {
      for (const t of d.target ?? []) transitions.push({ source: node.id, event: 'always', target: t.id, guard: guardName(d.guard) });
    }
    for (const c of children) visit(c, node.id);
  };
  visit(machine.root, null);
  return { states, transitions };
}

/** A machine unlike the section machine: repeated keys, a cross-level target, guarded events, a final state. */
const otherMachine = createMachine({
  id: 'toy',
  initial: 'a',
  states: {
    a: {
      initial: 'x',
      states: {
        x: { on: { NEXT: 'y' } },
        y: { on: { JUMP: { target: '#toy.b.x', guard: 'ready' } } },
      },
      on: { PING: { actions: 'pong' } },
    },
    b: {
      initial: 'x',
      states: { x: { always: { guard: 'done', target: 'z' } }, z: { type: 'final' } },
    },
  },
});

function checkGraph(machine: AnyStateMachine, graph: MachineGraph): void {
  const walked = walk(machine);
  assert.deepEqual(
    graph.states.map((s) => [s.id, s.path, s.parent]),
    walked.states.map((s) => [s.id, s.path, s.parent]),
    'every state node, in definition order, with its path and parent',
  );
  assert.equal(graph.transitions.length, walked.transitions.length, 'no transition more or less than the definition');
  for (const w of walked.transitions) {
    const found = graph.transitions.filter(
      (t) => t.source === w.source && t.event === w.event && t.target === w.target && t.guard === w.guard,
    );
    assert.equal(found.length >= 1, true, `transition ${JSON.stringify(w)} is in the graph`);
  }
  assert.equal(new Set(graph.transitions.map((t) => t.id)).size, graph.transitions.length, 'transition ids are unique');
}

function checkLayout(graph: MachineGraph, layout: MachineLayout): void {
  const nodes = new Map(layout.nodes.map((n) => [n.id, n]));
  const inside = (inner: { x: number; y: number; width: number; height: number }, outer: typeof inner) =>
    inner.x >= outer.x && inner.y >= outer.y && inner.x + inner.width <= outer.x + outer.width + 0.5 && inner.y + inner.height <= outer.y + outer.height + 0.5;
  for (const s of graph.states) {
    const n = nodes.get(s.id);
    assert.ok(n, `state ${s.id} is drawn`);
    assert.equal(n.path, s.path);
    assert.ok(n.width > 0 && n.height > 0, `${s.id} has a size`);
    assert.ok(n.x + n.width <= layout.width && n.y + n.height <= layout.height, `${s.id} is inside the drawing`);
    if (s.parent !== null) assert.ok(inside(n, nodes.get(s.parent)!), `${s.id} is drawn inside ${s.parent}`);
  }
  const parentOf = new Map(graph.states.map((s) => [s.id, s.parent]));
  const within = (id: string, ancestor: string): boolean => {
    for (let p = parentOf.get(id) ?? null; p !== null; p = parentOf.get(p) ?? null) if (p === ancestor) return true;
    return false;
  };
  const keyOf = new Map(graph.states.map((s) => [s.id, s.key]));
  for (const t of graph.transitions) {
    if (t.target === null) {
      const box = nodes.get(t.source);
      assert.ok(box?.items.some((i) => i.transition_id === t.id && i.text === t.label), `targetless ${t.id} is listed in its state`);
      continue;
    }
    if (t.kind !== 'initial' && within(t.target, t.source)) {
      // A compound's transition into its own child: listed in the compound, with where it leads.
      const box = nodes.get(t.source);
      const text = `${t.label} → ${keyOf.get(t.target)}`;
      assert.ok(box?.items.some((i) => i.transition_id === t.id && i.text === text), `${t.id} is listed in ${t.source}`);
      assert.ok(!layout.edges.some((e) => e.id === t.id), `${t.id} has no arrow from its own border`);
      continue;
    }
    const edge = layout.edges.find((e) => e.id === t.id);
    assert.ok(edge, `transition ${t.id} is drawn`);
    assert.equal(edge.target, t.target);
    assert.equal(edge.source, t.kind === 'initial' ? `${t.source}#initial` : t.source);
    assert.ok(edge.points.length >= 2, `${t.id} has a route`);
    if (t.kind !== 'initial') {
      assert.equal(edge.label, t.label);
      assert.ok(edge.label_box, `${t.id} has a placed label`);
    }
  }
}

describe('machine graph derived from the section machine', () => {
  const graph = machineGraph(sectionMachine);

  it('has every state node and every transition of the definition', () => {
    checkGraph(sectionMachine, graph);
    // Spot checks of what the page must show: each state's own transitions, in the domain's words.
    const labels = graph.transitions.map((t) => t.label);
    assert.ok(labels.some((l) => l.startsWith('enroll [admitted]') && l.includes('takeSeat')));
    assert.ok(labels.includes('enroll [admittedToSpareSeat] / takeSeat'));
    assert.ok(labels.includes('[hasFreeSeat]'), 'a choice branch reads as its guard');
    assert.ok(labels.includes('[else]'));
    assert.ok(labels.every((l) => !l.startsWith('always')), 'no bare always');
    assert.deepEqual(graph.states.filter((s) => s.choice).map((s) => s.path), ['openOrClosed', 'open.countingSeats']);
    assert.ok(labels.some((l) => l.includes('refuse(SECTION_CLOSED)')));
    assert.ok(graph.transitions.every((t) => !/handle|replay/.test(t.label)), 'no generic handler, no replay');
    // Only staff changes (and refusing a drop of a place nobody holds) mean the same in every state;
    // enroll and a real drop are decided by each state.
    assert.deepEqual(
      [...new Set(graph.transitions.filter((t) => t.source === graph.root && t.kind === 'event').map((t) => t.event))].sort(),
      ['changeSettings', 'drop', 'forceEnroll'],
    );
    for (const state of ['section.closed', 'section.open', 'section.open.seatsAvailable', 'section.open.reserveOnly', 'section.open.full']) {
      assert.ok(graph.transitions.some((t) => t.source === state && t.event === 'enroll'), `${state} decides an enroll itself`);
    }
    for (const state of ['section.closed', 'section.open', 'section.open.seatsAvailable']) {
      assert.ok(graph.transitions.some((t) => t.source === state && t.event === 'drop' && t.label.includes('releasePlace')), `${state} takes a drop itself`);
    }
  });

  it('names the active configuration as the engine names states', () => {
    assert.deepEqual(activeStateIds(graph, 'open.full'), ['section', 'section.open', 'section.open.full']);
    assert.deepEqual(activeStateIds(graph, 'closed'), ['section', 'section.closed']);
  });

  it('is drawn completely by the layout the page renders (GET /admin/api/machine)', async () => {
    const fx = await createHttpFixture({ seed: false });
    await fx.engine.importBatch({ departments: [], staff: [{ id: STAFF, passwordHash: PW_HASH, departmentId: null }], students: [], sections: [] }, { requestId: 'staff', actor: 'system' });
    try {
      const r = await fx.request('GET', '/admin/api/machine', { token: fx.staffToken() });
      assert.equal(r.status, 200, r.raw);
      const served = r.body as MachineLayout;
      checkGraph(sectionMachine, { id: served.machine, root: served.states[0]!.id, states: served.states, transitions: served.transitions });
      checkLayout(graph, served);
      assert.deepEqual(served, await layoutMachine(graph), 'the served layout is the derived one, unchanged by serialization');
    } finally {
      await fx.close();
    }
  });

  it('has its precomputed layout up to date: the committed file is what elkjs computes from the current machine', async () => {
    const committed = JSON.parse(readFileSync(MACHINE_LAYOUT_FILE, 'utf8')) as MachineLayout;
    assert.deepEqual(committed, await layoutMachine(graph), `${MACHINE_LAYOUT_FILE.pathname} is out of date with the section machine: run npm run layout`);
  });

  it('is served without loading elkjs into the serving process', { timeout: 120_000 }, () => {
    const child = fileURLToPath(new URL('./support/elk-free-server.ts', import.meta.url));
    const r = spawnSync(process.execPath, ['--import', 'tsx', child], { encoding: 'utf8', timeout: 110_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as { status: number; nodes: number; afterServing: boolean; afterImport: boolean };
    assert.equal(out.status, 200);
    assert.ok(out.nodes > 0, 'the served layout has boxes');
    assert.equal(out.afterServing, false, 'elkjs was loaded while building the app and serving /admin/api/machine');
    assert.equal(out.afterImport, true, 'the check sees elkjs once it is imported');
  });

  it('is in the Mermaid text: every state, every transition with its guard, the commands', () => {
    const text = toMermaid(graph);
    const lines = text.split('\n').map((l) => l.trim());
    assert.ok(lines.includes('stateDiagram-v2'));
    for (const s of graph.states) {
      const declared = lines.some((l) => l === s.key || l === `state ${s.key} {` || l === `state ${s.key} <<choice>>` || l.endsWith(` as ${s.key}`));
      assert.ok(declared, `state ${s.id} is declared`);
    }
    const key = (id: string) => graph.states.find((s) => s.id === id)!.key;
    const parent = (id: string) => graph.states.find((s) => s.id === id)!.parent;
    for (const t of graph.transitions) {
      if (t.kind === 'initial') assert.ok(lines.includes(`[*] --> ${key(t.target!)}`), `initial ${t.id}`);
      else if (t.target === null) assert.ok(lines.includes(t.label), `targetless ${t.id} is in the note`);
      else if (parent(t.target) === t.source || (parent(t.target) !== null && parent(parent(t.target)!) === t.source)) {
        assert.ok(lines.includes(`${t.label} → ${key(t.target)}`), `${t.id} into its own child is in the note`);
      }
      else assert.ok(lines.includes(`${key(t.source)} --> ${key(t.target)} : ${t.label}`), `transition ${t.id}`);
    }
    // Braces balance, notes close: the text parses as far as structure goes.
    assert.equal(lines.filter((l) => l.endsWith('{')).length, lines.filter((l) => l === '}').length);
    assert.equal(lines.filter((l) => l.startsWith('note ')).length, lines.filter((l) => l === 'end note').length);
  });
});

describe('machine graph of another machine (the derivation is generic)', () => {
  let layout: MachineLayout;
  const graph = machineGraph(otherMachine);
  before(async () => {
    layout = await layoutMachine(graph);
  });

  it('has every state and transition, including a cross-level one, and lays them all out', () => {
    checkGraph(otherMachine, graph);
    assert.ok(graph.transitions.some((t) => t.label === 'JUMP [ready]' && t.target === 'toy.b.x'));
    checkLayout(graph, layout);
  });

  it('gives repeated keys distinct Mermaid ids', () => {
    const text = toMermaid(graph);
    assert.match(text, /state "x" as toy_a_x/);
    assert.match(text, /state toy_b_x <<choice>>/);
    assert.ok(text.split('\n').includes('  y --> toy_b_x : JUMP [ready]'));
    assert.match(text, /PING \/ pong/);
  });
});
