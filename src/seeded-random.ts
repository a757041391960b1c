/**
 * mulberry32: a tiny, fast 32-bit PRNG. Demo data, benchmark workloads and property tests all need
 * draws that replay exactly from a seed (the same data on every machine, a failing seed that
 * reproduces), which `Math.random` cannot give. Not for anything secret.
 */
export function createSeededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
