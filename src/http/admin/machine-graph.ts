import type { AnyStateMachine, AnyStateNode } from 'xstate';

/**
 * The section machine as plain data, read from the machine definition itself (SPEC section 7).
 *
 * The admin page's statechart and the Mermaid export are both drawn from this graph, and the graph
 * is derived by walking the live XState definition (`machine.root`, its `states`, `transitions`,
 * eventless `always` transitions and `initial` transitions) rather than from a hand-written copy,
 * so the pictures can never drift from the machine the engine runs. The module is pure: no I/O,
 * no layout, no HTTP.
 */

/** One state node of the machine. */
export interface GraphState {
  /** XState's id, unique in the machine, e.g. `section.open.seatsAvailable`. */
  id: string;
  /**
   * The dotted path below the root, as the engine names states (`open.seatsAvailable`, `closed`);
   * the empty string for the root itself.
   */
  path: string;
  /** The node's own key, e.g. `seatsAvailable`. */
  key: string;
  /** Id of the parent node; null for the root. */
  parent: string | null;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** Id of the child entered first, for compound nodes; null otherwise. */
  initial: string | null;
  /** 0 for the root. */
  depth: number;
  /**
   * A choice pseudostate (UML): a leaf left at once by guarded eventless branches, never a resting
   * state; drawn as a diamond whose branches read `[guard]` (`[else]` for the unguarded one).
   */
  choice: boolean;
}

/**
 * `event`: taken when a command arrives; `always`: eventless, taken as soon as its guard holds;
 * `initial`: entering a compound node enters this child.
 */
export type TransitionKind = 'event' | 'always' | 'initial';

/** One transition of the machine. */
export interface GraphTransition {
  /** Stable id, e.g. `section.open.full:always:1` (source, event, index among the source's). */
  id: string;
  kind: TransitionKind;
  /** Id of the state the transition belongs to. */
  source: string;
  /**
   * Id of the target state; null for a targetless transition, which runs its actions without
   * leaving any state (every command is handled that way at the root).
   */
  target: string | null;
  /** Event type for `event` transitions; `always` and `initial` for the other kinds. */
  event: string;
  /** Name of the guard, or null when unguarded. */
  guard: string | null;
  /** Names of the actions run. */
  actions: string[];
  /** Human label: `event [guard] / actions`. */
  label: string;
}

/** The whole machine: states in document order (parents before children), then transitions. */
export interface MachineGraph {
  /** The machine's id, e.g. `section`. */
  id: string;
  /** Id of the root state node. */
  root: string;
  states: GraphState[];
  transitions: GraphTransition[];
}

/**
 * A readable name for a guard or action, whatever form the definition gave it in; a parameterized
 * one shows its parameters' values, e.g. `refuse(SECTION_FULL)`.
 */
function implName(x: unknown, fallback: string): string {
  if (typeof x === 'string') return x;
  // XState's higher-order guards (and, or, not) carry their operands.
  const operands = (x as { guards?: unknown }).guards;
  if (typeof x === 'function' && Array.isArray(operands) && ['and', 'or', 'not'].includes(x.name)) {
    const names = operands.map((g) => implName(g, fallback));
    return x.name === 'not' ? `!${names[0]}` : names.join(x.name === 'and' ? ' && ' : ' || ');
  }
  if (typeof x === 'function') return x.name && x.name !== 'anonymous' ? x.name : fallback;
  if (typeof x === 'object' && x !== null && typeof (x as { type?: unknown }).type === 'string') {
    const { type, params } = x as { type: string; params?: unknown };
    if (typeof params === 'object' && params !== null) {
      const values = Object.values(params).filter((v) => typeof v === 'string' || typeof v === 'number');
      if (values.length > 0) return `${type}(${values.join(', ')})`;
    }
    return type;
  }
  return fallback;
}

/**
 * `event [guard] / a, b`: the usual statechart notation for a transition's label. An eventless
 * transition shows only its guard, `[else]` when it has none (it is taken when no other branch is).
 */
export function transitionLabel(t: Pick<GraphTransition, 'event' | 'guard' | 'actions' | 'kind'>): string {
  let s = t.kind === 'event' ? t.event : '';
  if (t.guard !== null) s += `${s ? ' ' : ''}[${t.guard}]`;
  else if (t.kind === 'always') s += '[else]';
  if (t.actions.length > 0) s += `${s ? ' ' : ''}/ ${t.actions.join(', ')}`;
  return s;
}

/**
 * Walks a machine definition into a {@link MachineGraph}. Depth-first in definition order, so the
 * same machine always gives the same graph (ids, order), which keeps layouts and diffs stable.
 */
export function machineGraph(machine: AnyStateMachine): MachineGraph {
  const root = machine.root as AnyStateNode;
  const states: GraphState[] = [];
  const transitions: GraphTransition[] = [];
  const rootPathLength = root.path.length;

  const add = (
    kind: TransitionKind,
    source: AnyStateNode,
    event: string,
    index: number,
    def: { target?: ReadonlyArray<AnyStateNode> | undefined; guard?: unknown; actions?: readonly unknown[] },
  ): void => {
    const targets = def.target ?? [];
    const guard = def.guard === undefined ? null : implName(def.guard, 'inline guard');
    const actions = (def.actions ?? []).map((a, i) => implName(a, `inline action ${i + 1}`));
    // A transition with several targets only occurs with parallel states; one edge per target.
    const targetIds = targets.length === 0 ? [null] : targets.map((t) => t.id);
    const label = transitionLabel({ kind, event, guard, actions });
    targetIds.forEach((target, ti) => {
      transitions.push({
        id: `${source.id}:${event}:${index}${targetIds.length > 1 ? `.${ti}` : ''}`,
        kind,
        source: source.id,
        target,
        event,
        guard,
        actions,
        label,
      });
    });
  };

  const walk = (node: AnyStateNode, parent: AnyStateNode | null): void => {
    const children = Object.values(node.states) as AnyStateNode[];
    const initialTarget = children.length > 0 ? node.initial?.target?.[0] : undefined;
    const choice = children.length === 0 && node.transitions.size === 0 && (node.always ?? []).length > 0;
    states.push({
      id: node.id,
      path: node.path.slice(rootPathLength).join('.'),
      key: node.key,
      parent: parent?.id ?? null,
      type: node.type,
      initial: initialTarget?.id ?? null,
      depth: node.path.length - rootPathLength,
      choice,
    });
    if (children.length > 0 && node.initial) {
      add('initial', node, 'initial', 0, { target: node.initial.target, actions: node.initial.actions });
    }
    for (const [event, defs] of node.transitions) {
      defs.forEach((d, i) => add('event', node, event, i, d));
    }
    (node.always ?? []).forEach((d, i) => add('always', node, 'always', i, d));
    for (const child of children) walk(child, node);
  };
  walk(root, null);
  return { id: machine.id, root: root.id, states, transitions };
}

/** Every state node id on the way from the root to the state at `path` (the active configuration). */
export function activeStateIds(graph: MachineGraph, path: string): string[] {
  const byPath = new Map(graph.states.map((s) => [s.path, s]));
  const byId = new Map(graph.states.map((s) => [s.id, s]));
  const out: string[] = [];
  let s = byPath.get(path);
  while (s) {
    out.unshift(s.id);
    s = s.parent === null ? undefined : byId.get(s.parent);
  }
  return out;
}

/** Mermaid ids: the key where it is unique in the machine, else the path joined with `_`. */
function mermaidIds(graph: MachineGraph): Map<string, string> {
  const keyCount = new Map<string, number>();
  for (const s of graph.states) keyCount.set(s.key, (keyCount.get(s.key) ?? 0) + 1);
  const safe = (x: string): string => x.replace(/[^A-Za-z0-9_]/g, '_');
  const ids = new Map<string, string>();
  for (const s of graph.states) {
    const unique = keyCount.get(s.key) === 1 && s.key !== 'state' && s.key !== 'note';
    ids.set(s.id, safe(unique ? s.key : s.id));
  }
  return ids;
}

/** Mermaid labels must not contain what ends a label or a statement. */
const mermaidText = (s: string): string => s.replace(/[:;\n{}]/g, ' ').trim();

/**
 * The machine as Mermaid `stateDiagram-v2` text, for docs, reviews and any Mermaid renderer.
 * Compound states become composite states with their `[*]` initial arrows; choice pseudostates are
 * `<<choice>>` with `[guard]` branches. Mermaid has no notation for targetless transitions (actions
 * without a change of state) or for a composite's transition into its own child, so those are
 * listed in a note on their state, one per line.
 */
export function toMermaid(graph: MachineGraph): string {
  const ids = mermaidIds(graph);
  const mid = (id: string): string => ids.get(id) ?? id;
  const children = new Map<string | null, GraphState[]>();
  for (const s of graph.states) {
    const list = children.get(s.parent) ?? [];
    list.push(s);
    children.set(s.parent, list);
  }
  const bySource = new Map<string, GraphTransition[]>();
  for (const t of graph.transitions) {
    const list = bySource.get(t.source) ?? [];
    list.push(t);
    bySource.set(t.source, list);
  }
  const parentOf = new Map(graph.states.map((s) => [s.id, s.parent]));
  const isInside = (id: string, ancestor: string): boolean => {
    for (let p = parentOf.get(id) ?? null; p !== null; p = parentOf.get(p) ?? null) if (p === ancestor) return true;
    return false;
  };
  const keyOf = new Map(graph.states.map((s) => [s.id, s.key]));
  const noteLine = (t: GraphTransition): string =>
    mermaidText(t.target === null ? t.label : `${t.label} → ${keyOf.get(t.target) ?? t.target}`);

  const lines: string[] = [
    `%% Generated from the XState definition of machine "${graph.id}"; do not edit by hand.`,
    'stateDiagram-v2',
    '  direction LR',
  ];
  const notes: string[] = [];

  const emit = (s: GraphState, indent: string): void => {
    const kids = children.get(s.id) ?? [];
    const own = bySource.get(s.id) ?? [];
    if (kids.length === 0) {
      if (s.choice) lines.push(`${indent}state ${mid(s.id)} <<choice>>`);
      else if (mid(s.id) !== s.key) lines.push(`${indent}state "${mermaidText(s.key)}" as ${mid(s.id)}`);
      else lines.push(`${indent}${mid(s.id)}`);
    } else {
      lines.push(`${indent}state ${mid(s.id)} {`);
      for (const t of own.filter((x) => x.kind === 'initial' && x.target !== null)) {
        lines.push(`${indent}  [*] --> ${mid(t.target as string)}`);
      }
      for (const k of kids) emit(k, `${indent}  `);
      // Transitions between children are written inside the composite, where Mermaid expects them.
      for (const k of kids) {
        for (const t of bySource.get(k.id) ?? []) {
          if (t.kind === 'initial' || t.target === null) continue;
          if (parentOf.get(t.target) === s.id) lines.push(`${indent}  ${mid(t.source)} --> ${mid(t.target)} : ${mermaidText(t.label)}`);
        }
      }
      lines.push(`${indent}}`);
    }
    // Mermaid draws neither targetless transitions nor one from a composite into its own child:
    // both are listed in a note on the state, the latter with its target.
    const internal = own.filter((t) => t.kind !== 'initial' && (t.target === null || isInside(t.target, s.id)));
    if (internal.length > 0) {
      notes.push(`  note right of ${mid(s.id)}`);
      notes.push(kids.length > 0 ? `    in every ${s.key} state` : `    in ${s.key}, state unchanged unless shown`);
      for (const t of internal) notes.push(`    ${noteLine(t)}`);
      notes.push('  end note');
    }
  };

  const root = graph.states.find((s) => s.id === graph.root);
  if (root) {
    lines.push(`  [*] --> ${mid(root.id)}`);
    emit(root, '  ');
  }
  // Transitions not written inside a composite (their target is not a sibling): at the top level.
  for (const t of graph.transitions) {
    if (t.kind === 'initial' || t.target === null) continue;
    if (parentOf.get(t.target) === parentOf.get(t.source) || isInside(t.target, t.source)) continue;
    lines.push(`  ${mid(t.source)} --> ${mid(t.target)} : ${mermaidText(t.label)}`);
  }
  lines.push(...notes);
  return `${lines.join('\n')}\n`;
}
