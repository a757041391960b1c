/**
 * CSV as RFC 4180 reads it (and spreadsheets open it): comma separated, CRLF line ends, a field
 * quoted when it holds a comma, a quote or a line break, quotes doubled inside. Text that a
 * spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`, tab or CR) is prefixed with `'`,
 * so a section named `=HYPERLINK(...)` stays text. Numbers are written as they are.
 */

export type CsvCell = string | number | boolean | null;

const FORMULA_START = /^[=+\-@\t\r]/;

export function csvField(v: CsvCell): string {
  if (v === null) return '';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const text = FORMULA_START.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * Excel reads a CSV file without a byte-order mark in the machine's ANSI code page, so a
 * lecturer named `Ünïcødé` or `名前` came out garbled when a registrar double-clicked the download
 * (probe S); with the UTF-8 mark it reads UTF-8. RFC 4180 readers and LibreOffice skip it.
 */
export const UTF8_BOM = '\uFEFF';

/** A header row and data rows as one CSV document (UTF-8 byte-order mark first, a final CRLF). */
export function toCsv(header: string[], rows: CsvCell[][]): string {
  const lines = [header.map(csvField).join(',')];
  for (const r of rows) lines.push(r.map(csvField).join(','));
  return `${UTF8_BOM}${lines.join('\r\n')}\r\n`;
}
