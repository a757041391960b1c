import type { ELK, ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api.js';
import type { GraphState, GraphTransition, MachineGraph } from './machine-graph.js';

/**
 * Lays a {@link MachineGraph} out with elkjs on the server, so the admin page gets finished
 * coordinates and only has to draw SVG: the browser downloads a few kilobytes of JSON instead of
 * the 1.5 MB layout engine, and every admin sees the same picture. The layout depends only on the
 * machine definition, so it is computed once per process and cached by the caller.
 *
 * All coordinates are absolute (ELK's `json.shapeCoords` / `json.edgeCoords` = ROOT), in pixels,
 * with the origin at the top left of the drawing.
 */

/**
 * What a box of the drawing stands for. States list their transitions that have no arrow of their
 * own in their box (UML's internal-transitions compartment): a leaf its targetless ones, a
 * compound (or the root) those that apply in every child state. A `choice` is a diamond.
 */
export type LayoutNodeKind = 'root' | 'compound' | 'state' | 'choice' | 'initial';

/** One line of a list: a targetless transition (or, in a compound's list, one into a child, with an arrow to it). */
export interface LayoutItem {
  transition_id: string;
  text: string;
}

/** A box of the drawing, with its absolute position; the page draws it as a rect (or a dot). */
export interface LayoutNode {
  /** Drawing id: the state id for states, `<state id>#initial` for a start dot. */
  id: string;
  kind: LayoutNodeKind;
  /** The state this box draws (for `initial`: the state it starts). */
  state_id: string;
  /** The state's dotted path (`open.full`), as the engine reports a section's state. */
  path: string;
  label: string;
  x: number;
  y: number;
  width: number;
  height: number;
  /** The transitions listed in the box (see {@link LayoutNodeKind}). */
  items: LayoutItem[];
}

/** A point of an edge's route, absolute. */
export interface LayoutPoint {
  x: number;
  y: number;
}

/** A transition with a target, routed by ELK; the page draws it as a polyline with an arrow head. */
export interface LayoutEdge {
  /** The transition id (see {@link GraphTransition.id}). */
  id: string;
  kind: GraphTransition['kind'];
  /** Drawing ids of the boxes the edge joins. */
  source: string;
  target: string;
  label: string;
  /** Polyline from source to target (start point, bend points, end point). */
  points: LayoutPoint[];
  label_box: { x: number; y: number; width: number; height: number } | null;
}

/** The machine graph plus where to draw each part of it. */
export interface MachineLayout {
  machine: string;
  width: number;
  height: number;
  states: GraphState[];
  transitions: GraphTransition[];
  nodes: LayoutNode[];
  edges: LayoutEdge[];
}

type ElkConstructor = new () => ELK;

/**
 * The section machine's layout, precomputed by `npm run layout` (scripts/machine-layout.ts) and
 * committed: the serving process reads this file and never loads elkjs. A test fails while the
 * file differs from {@link layoutMachine} of the current machine.
 */
export const MACHINE_LAYOUT_FILE = new URL('./machine-layout.json', import.meta.url);

/**
 * elkjs is loaded on first use, not at startup: parsing its 1.5 MB bundle takes about 300 ms,
 * which every process start would pay although only an admin opening the page needs it. It is a
 * CommonJS bundle whose typings declare an ES default export; under NodeNext the default import is
 * `module.exports` at run time while the types describe a namespace, so either shape is accepted.
 */
async function loadElk(): Promise<ElkConstructor> {
  const mod: unknown = await import('elkjs/lib/elk.bundled.js');
  const first = (mod as { default?: unknown }).default ?? mod;
  return ((first as { default?: unknown }).default ?? first) as ElkConstructor;
}

/** Text is measured by estimate (no fonts on the server); the page draws with a matching font size. */
const CHAR_W = 7;
const LABEL_CHAR_W = 6.6;
const LINE_H = 16;

const textWidth = (s: string, charW = CHAR_W): number => Math.ceil(s.length * charW);

/** An edge label's lines: the trigger and guard, then the actions (the page draws them the same way). */
export const labelLines = (label: string): string[] => {
  const i = label.indexOf(' / ');
  return i < 0 ? [label] : [label.slice(0, i), label.slice(i + 1)];
};
const labelSize = (label: string): { width: number; height: number } => {
  const lines = labelLines(label);
  return { width: Math.max(...lines.map((l) => textWidth(l, LABEL_CHAR_W))) + 8, height: lines.length * LINE_H };
};

/**
 * Definition order decides which edges of a cycle point backwards, so states read left to right in
 * the order the machine lists them (seatsAvailable, reserveOnly, full). ELK reads these per
 * hierarchy level, and its model-order strategies fail on edges that cross levels, so they are
 * used only when every edge joins siblings (as in the section machine).
 */
const ORDER_OPTIONS = {
  'elk.layered.cycleBreaking.strategy': 'MODEL_ORDER',
  'elk.layered.considerModelOrder.strategy': 'NODES_AND_EDGES',
} as const;

const LEVEL_OPTIONS = {
  'elk.algorithm': 'layered',
  'elk.direction': 'DOWN',
  'elk.edgeRouting': 'ORTHOGONAL',
  'elk.edgeLabels.placement': 'CENTER',
  'elk.spacing.nodeNode': '36',
  'elk.spacing.edgeLabel': '4',
  'elk.spacing.edgeNode': '18',
  'elk.spacing.edgeEdge': '14',
  'elk.spacing.componentComponent': '36',
  'elk.layered.spacing.nodeNodeBetweenLayers': '40',
  'elk.layered.spacing.edgeNodeBetweenLayers': '18',
  'elk.layered.nodePlacement.strategy': 'BRANDES_KOEPF',
} as const;

const DRAWING_ID = '#drawing';

/** Lays the graph out; deterministic for a given graph. */
export async function layoutMachine(graph: MachineGraph): Promise<MachineLayout> {
  const elk = new (await loadElk())();
  const byId = new Map(graph.states.map((s) => [s.id, s]));
  const root = byId.get(graph.root);
  if (!root) throw new Error(`machine graph has no root state ${graph.root}`);
  const kids = new Map<string, GraphState[]>();
  for (const s of graph.states) {
    if (s.parent === null) continue;
    const list = kids.get(s.parent) ?? [];
    list.push(s);
    kids.set(s.parent, list);
  }
  const ancestors = (id: string): string[] => {
    const out: string[] = [];
    for (let st = byId.get(id); st; st = st.parent === null ? undefined : byId.get(st.parent)) out.unshift(st.id);
    return out;
  };
  /** A compound's transition into its own child is listed in the compound's box, not drawn from its border. */
  const intoOwnChild = (t: GraphTransition): boolean => t.kind !== 'initial' && t.target !== null && ancestors(t.target).slice(0, -1).includes(t.source);
  const listedOf = new Map<string, GraphTransition[]>();
  for (const t of graph.transitions) {
    if (t.kind === 'initial' || (t.target !== null && !intoOwnChild(t))) continue;
    const list = listedOf.get(t.source) ?? [];
    list.push(t);
    listedOf.set(t.source, list);
  }
  const itemText = (t: GraphTransition): string => (t.target === null ? t.label : `${t.label} → ${byId.get(t.target)?.key ?? t.target}`);

  // Drawn edges, each filed under the box that contains both ends (ELK wants it there).
  const edgesIn = new Map<string, ElkExtendedEdge[]>();
  const edgeMeta = new Map<string, { id: string; kind: LayoutEdge['kind']; label: string; source: string; target: string }>();
  let crossesLevels = false;
  const addEdge = (id: string, kind: LayoutEdge['kind'], label: string, source: string, target: string, sourceState: string, inside: boolean): void => {
    // A start dot or a list box lives inside its state; other ends live inside their parents.
    const a = inside ? ancestors(sourceState) : ancestors(sourceState).slice(0, -1);
    const b = ancestors(target).slice(0, -1);
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i += 1;
    if (i !== a.length || i !== b.length) crossesLevels = true;
    const container = i === 0 ? DRAWING_ID : (a[i - 1] as string);
    edgeMeta.set(id, { id, kind, label, source, target });
    const list = edgesIn.get(container) ?? [];
    list.push({
      id,
      sources: [source],
      targets: [target],
      // A label breaks before its actions (`event [guard]` / `/ actions`), so edges stay narrow.
      labels: label ? [{ id: `${id}#label`, text: label, ...labelSize(label) }] : [],
    });
    edgesIn.set(container, list);
  };
  for (const t of graph.transitions) {
    if (t.target === null || intoOwnChild(t)) continue;
    const initial = t.kind === 'initial';
    addEdge(t.id, t.kind, initial ? '' : t.label, initial ? `${t.source}#initial` : t.source, t.target, t.source, initial);
  }
  // Each hierarchy level is laid out on its own (unless edges cross levels), so every box that has
  // children carries the options.
  const levelOptions: Record<string, string> = { ...LEVEL_OPTIONS, ...(crossesLevels ? {} : ORDER_OPTIONS) };

  const meta = new Map<string, Omit<LayoutNode, 'x' | 'y' | 'width' | 'height'>>();
  const build = (s: GraphState): ElkNode => {
    const children = kids.get(s.id) ?? [];
    if (children.length === 0) {
      if (s.choice) {
        meta.set(s.id, { id: s.id, kind: 'choice', state_id: s.id, path: s.path, label: s.key, items: [] });
        return { id: s.id, width: 26, height: 26 };
      }
      const items = (listedOf.get(s.id) ?? []).map((t) => ({ transition_id: t.id, text: itemText(t) }));
      meta.set(s.id, { id: s.id, kind: 'state', state_id: s.id, path: s.path, label: s.key, items });
      // Each listed transition takes two lines in a leaf's box, like an edge label.
      const lines = items.flatMap((i) => labelLines(i.text));
      const width = Math.max(120, textWidth(s.key) + 32, ...lines.map((l) => textWidth(l, LABEL_CHAR_W) + 20));
      return { id: s.id, width, height: lines.length === 0 ? 40 : 40 + lines.length * LINE_H + 6 };
    }
    const elkChildren: ElkNode[] = [];
    if (s.initial !== null) {
      const id = `${s.id}#initial`;
      meta.set(id, { id, kind: 'initial', state_id: s.id, path: s.path, label: '', items: [] });
      elkChildren.push({ id, width: 14, height: 14 });
    }
    for (const c of children) elkChildren.push(build(c));
    // The transitions that apply in every child are listed under the compound's title (a
    // compartment, as UML draws internal transitions), so they take height, not a column of their own.
    const items = (listedOf.get(s.id) ?? []).map((t) => ({ transition_id: t.id, text: itemText(t) }));
    const kind = s.parent === null ? 'root' : 'compound';
    const label = s.parent === null ? `machine: ${s.key}` : s.key;
    meta.set(s.id, { id: s.id, kind, state_id: s.id, path: s.path, label, items });
    const listHeight = items.length === 0 ? 0 : LINE_H + items.length * LINE_H + 8;
    const minWidth = Math.max(textWidth(label) + 32, ...items.map((i) => textWidth(i.text, LABEL_CHAR_W) + 32));
    return {
      id: s.id,
      labels: [{ text: label, width: textWidth(label) + 8, height: 20 }],
      layoutOptions: {
        ...levelOptions,
        // Inside a compound state its children read left to right (the choice, then the states
        // stacked), which keeps the chart narrow; the top level reads downwards.
        ...(s.parent === null ? {} : { 'elk.direction': 'RIGHT' }),
        'elk.padding': `[top=${40 + listHeight},left=24,bottom=24,right=24]`,
        'elk.nodeLabels.placement': 'INSIDE V_TOP H_LEFT',
        'elk.nodeSize.constraints': 'MINIMUM_SIZE',
        'elk.nodeSize.minimum': `(${minWidth}, ${60 + listHeight})`,
      },
      children: elkChildren,
      edges: edgesIn.get(s.id) ?? [],
    };
  };

  const graphIn: ElkNode = {
    id: DRAWING_ID,
    layoutOptions: {
      ...levelOptions,
      'elk.hierarchyHandling': crossesLevels ? 'INCLUDE_CHILDREN' : 'SEPARATE_CHILDREN',
      'elk.json.shapeCoords': 'ROOT',
      'elk.json.edgeCoords': 'ROOT',
      'elk.padding': '[top=8,left=8,bottom=8,right=8]',
    },
    children: [build(root)],
    edges: edgesIn.get(DRAWING_ID) ?? [],
  };
  const laid: ElkNode = await elk.layout(graphIn);

  const nodes: LayoutNode[] = [];
  const laidEdges: ElkExtendedEdge[] = [];
  const collect = (n: ElkNode): void => {
    const m = meta.get(n.id);
    if (m) {
      nodes.push({ ...m, x: n.x ?? 0, y: n.y ?? 0, width: n.width ?? 0, height: n.height ?? 0 });
    }
    laidEdges.push(...(n.edges ?? []));
    for (const c of n.children ?? []) collect(c);
  };
  collect(laid);

  const outEdges: LayoutEdge[] = [];
  for (const e of laidEdges) {
    const m = edgeMeta.get(e.id);
    if (!m) continue;
    const points: LayoutPoint[] = [];
    for (const sec of e.sections ?? []) {
      points.push(sec.startPoint, ...(sec.bendPoints ?? []), sec.endPoint);
    }
    const l = e.labels?.[0];
    outEdges.push({
      id: m.id,
      kind: m.kind,
      source: m.source,
      target: m.target,
      label: m.label,
      points: points.map((p) => ({ x: p.x, y: p.y })),
      label_box: l ? { x: l.x ?? 0, y: l.y ?? 0, width: l.width ?? 0, height: l.height ?? 0 } : null,
    });
  }

  return {
    machine: graph.id,
    width: Math.ceil(laid.width ?? 0),
    height: Math.ceil(laid.height ?? 0),
    states: graph.states,
    transitions: graph.transitions,
    nodes,
    edges: outEdges,
  };
}
