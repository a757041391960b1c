import { fmt } from './stats.js';

/**
 * One updating status line on stderr: requests done (of the total, when known), the current rate
 * and the errors so far. On a terminal it is rewritten in place every 100 ms; elsewhere (CI logs)
 * a line is printed every 2 s.
 */
export interface ProgressSource {
  label: string;
  done: () => number;
  total?: number;
  errors: () => number;
  /** Extra text, e.g. rejections by reason. */
  extra?: () => string;
}

const tty = process.stderr.isTTY === true;
let active: Progress | null = null;

function setActive(p: Progress | null): void {
  active = p;
}

export class Progress {
  private timer: NodeJS.Timeout;
  private lastDone = 0;
  private lastAt = performance.now();
  private rate = 0;
  private readonly start = performance.now();

  constructor(private readonly src: ProgressSource) {
    active?.stop();
    this.timer = setInterval(() => this.render(), tty ? 100 : 2000);
    this.timer.unref();
    setActive(this);
  }

  private line(): string {
    const now = performance.now();
    const done = this.src.done();
    const dt = (now - this.lastAt) / 1000;
    if (dt > 0) {
      const inst = (done - this.lastDone) / dt;
      this.rate = this.rate === 0 ? inst : 0.5 * this.rate + 0.5 * inst;
    }
    this.lastDone = done;
    this.lastAt = now;
    const of = this.src.total !== undefined ? `/${fmt(this.src.total)}` : '';
    const secs = ((now - this.start) / 1000).toFixed(1);
    const extra = this.src.extra ? `  ${this.src.extra()}` : '';
    return `${this.src.label}: ${fmt(done)}${of} req  ${fmt(this.rate)} req/s  errors ${fmt(this.src.errors())}  ${secs}s${extra}`;
  }

  private render(): void {
    const text = this.line();
    if (tty) {
      const width = process.stderr.columns ?? 120;
      process.stderr.write(`\r\x1b[2K${text.slice(0, width - 1)}`);
    } else {
      process.stderr.write(`${text}\n`);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    if (active === this) active = null;
    if (tty) process.stderr.write('\r\x1b[2K');
  }
}

/** Clears the status line (before printing something else, or on Ctrl-C). */
export function clearProgress(): void {
  active?.stop();
}

/** A log line on stderr that does not collide with the status line. */
export function note(msg: string): void {
  if (tty && active) process.stderr.write('\r\x1b[2K');
  process.stderr.write(`${msg}\n`);
}
