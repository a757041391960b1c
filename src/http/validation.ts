import type { FastifySchemaCompiler } from 'fastify';
import { Kind, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';

/**
 * Validates requests with TypeBox's compiled checks instead of Fastify's default Ajv, because the
 * API needs two different policies that one Ajv instance cannot have at once:
 *
 * - JSON bodies are checked exactly as sent: `"course_id": "12"` is a 400 (the Go service's JSON
 *   decoding refused it too); unknown members are refused rather than silently dropped, except on
 *   the Go service's own routes, whose bodies ignore them as its decoder did (`GoBody`).
 * - Query strings and path params always arrive as strings, so integer and boolean fields are
 *   converted first, but strictly: only plain decimal digits become integers. (TypeBox's own
 *   `Value.Convert` would turn "12.5" into 12 and "true" into 1.)
 */

/** At most this many problems are listed in a 400's reason; enough to fix a request, not a DoS. */
const MAX_ERRORS = 5;

const INTEGER = /^-?\d{1,16}$/;
const NUMBER = /^-?\d{1,16}(\.\d{1,16})?$/;

function unionMembers(schema: TSchema): TSchema[] {
  return schema[Kind] === 'Union' && Array.isArray(schema.anyOf) ? (schema.anyOf as TSchema[]).flatMap(unionMembers) : [schema];
}

function typesOf(schema: TSchema): string[] {
  return unionMembers(schema).flatMap((m) => (typeof m.type === 'string' ? [m.type] : []));
}

/** Converts one flat string value to the type the property's schema asks for, when it is unambiguous. */
function convertScalar(schema: TSchema, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const types = typesOf(schema);
  if (types.includes('string')) return value;
  if (types.includes('integer') && INTEGER.test(value)) return Number(value);
  if (types.includes('number') && NUMBER.test(value)) return Number(value);
  if (types.includes('boolean') && (value === 'true' || value === 'false')) return value === 'true';
  return value;
}

function convertFlatObject(schema: TSchema, value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const props = (schema.properties ?? {}) as Record<string, TSchema>;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const prop = props[key];
    out[key] = prop ? convertScalar(prop, v) : v;
  }
  return out;
}

const PART_NAMES: Record<string, string> = { body: 'the request body', querystring: 'the query string', params: 'the path', headers: 'the headers' };

/**
 * One plain sentence for one validation problem, naming the field: "course_id is required",
 * "course_id must be a number" (not TypeBox's "Expected required property, Expected integer").
 */
export function describeProblem(e: ValueError, httpPart: string): string {
  const field = e.path === '' ? (PART_NAMES[httpPart] ?? httpPart) : e.path.slice(1).replace(/\//g, '.');
  const limit = (key: string): unknown => (e.schema as Record<string, unknown>)[key];
  switch (e.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return `${field} is required`;
    case ValueErrorType.ObjectAdditionalProperties:
      return `${field} is not a known field`;
    case ValueErrorType.Integer:
      return typeof e.value === 'number' ? `${field} must be a whole number` : `${field} must be a number`;
    case ValueErrorType.Number:
      return `${field} must be a number`;
    case ValueErrorType.Union: {
      const numeric = unionMembers(e.schema).find((m) => m.type === 'integer' || m.type === 'number');
      if (!numeric) return `${field} has the wrong type`;
      // A number of the wrong kind or size: say which, as the plain integer's errors do.
      if (typeof e.value === 'number') {
        const min = numeric.minimum as number | undefined;
        const max = numeric.maximum as number | undefined;
        if (numeric.type === 'integer' && !Number.isInteger(e.value)) return `${field} must be a whole number`;
        if (min !== undefined && e.value < min) return `${field} must be at least ${String(min)}`;
        if (max !== undefined && e.value > max) return `${field} must be at most ${String(max)}`;
      }
      return `${field} must be a number`;
    }
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMinimum:
      return `${field} must be at least ${String(limit('minimum'))}`;
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMaximum:
      return `${field} must be at most ${String(limit('maximum'))}`;
    case ValueErrorType.String:
      return `${field} must be a string`;
    case ValueErrorType.StringMinLength:
      return `${field} must be at least ${String(limit('minLength'))} characters`;
    case ValueErrorType.StringMaxLength:
      return `${field} must be at most ${String(limit('maxLength'))} characters`;
    case ValueErrorType.StringPattern:
    case ValueErrorType.StringFormat:
      return `${field} has the wrong format`;
    case ValueErrorType.Boolean:
      return `${field} must be true or false`;
    case ValueErrorType.Object:
      return `${field} must be a JSON object`;
    case ValueErrorType.Array:
      return `${field} must be a list`;
    default:
      return `${field}: ${e.message.charAt(0).toLowerCase()}${e.message.slice(1)}`;
  }
}

/**
 * Joins the problems of one request part into the 400's reason, one sentence per field, without
 * Fastify's `body/` prefixes (the sentences name their field).
 */
export function schemaErrorFormatter(errors: { message?: string }[]): Error {
  return new Error(errors.map((e) => e.message ?? 'invalid').join('; '));
}

/** An unpaired UTF-16 surrogate: not valid Unicode, so not valid UTF-8 for PostgreSQL. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The path of the first string (member names included) that PostgreSQL cannot store, or null:
 * one holding a NUL character (text columns refuse it) or an unpaired surrogate (json and jsonb
 * refuse it). Such text passes every schema, and found first in the database it failed the whole
 * group commit it was written in (503 for every request in that batch): it is refused here, as
 * the 400 it is, before anything is decided.
 */
export function unstorableTextPath(value: unknown, path = ''): string | null {
  const found = unstorable(value, path, 0);
  return found === null ? null : found.path;
}

/**
 * Deeper than this, a body is refused (400) before it is walked: no field of any route is nested
 * more than a few levels, and a 10 KB body of brackets nested thousands deep overflowed the stack
 * of this walk (a 500 for anyone, on the unauthenticated `POST /login`, whose Go-compatible schema
 * lets unknown fields through).
 */
export const MAX_BODY_DEPTH = 32;

/**
 * Whether a parsed body is nested more than {@link MAX_BODY_DEPTH} levels deep; the walk stops at
 * that depth, so it cannot overflow the stack itself. Run as the body is parsed, before any hook:
 * an instance that forwards a write to its shard's owner serialises the body before any route
 * validates it, and a body nested thousands deep overflowed that serialisation (a 500 from every
 * instance but the owner; probe O).
 */
export function nestedTooDeep(value: unknown, depth = 0): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (depth >= MAX_BODY_DEPTH) return true;
  if (Array.isArray(value)) {
    for (const v of value) if (nestedTooDeep(v, depth + 1)) return true;
    return false;
  }
  for (const key in value) if (Object.hasOwn(value, key) && nestedTooDeep((value as Record<string, unknown>)[key], depth + 1)) return true;
  return false;
}

type Unstorable = { path: string; why: 'text' | 'depth' };

function unstorable(value: unknown, path: string, depth: number): Unstorable | null {
  if (typeof value === 'string') return value.includes('\u0000') || LONE_SURROGATE.test(value) ? { path, why: 'text' } : null;
  if (typeof value !== 'object' || value === null) return null;
  if (depth >= MAX_BODY_DEPTH) return { path, why: 'depth' };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = unstorable(value[i], `${path}/${i}`, depth + 1);
      if (p !== null) return p;
    }
    return null;
  }
  for (const key of Object.keys(value)) {
    if (unstorable(key, '', 0) !== null) return { path: `${path}/${key}`, why: 'text' };
    const p = unstorable((value as Record<string, unknown>)[key], `${path}/${key}`, depth + 1);
    if (p !== null) return p;
  }
  return null;
}

/** Fastify's validator compiler for every route: strict bodies, strictly converted query strings and params. */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = TypeCompiler.Compile(schema);
  const convert = httpPart === 'querystring' || httpPart === 'params' || httpPart === 'headers';
  return (input: unknown) => {
    const value = convert ? convertFlatObject(schema, input) : input;
    if (check.Check(value)) {
      const bad = unstorable(value, '', 0);
      if (bad === null) return { value };
      const field = bad.path === '' ? (PART_NAMES[httpPart ?? 'body'] ?? 'the request') : bad.path.slice(1).replace(/\//g, '.');
      const message =
        bad.why === 'depth'
          ? `${PART_NAMES[httpPart ?? 'body'] ?? 'the request'} is nested more than ${MAX_BODY_DEPTH} levels deep (at ${field.slice(0, 120)}...)`
          : `${field} must not contain NUL characters or unpaired surrogates`;
      return { error: [{ message, instancePath: bad.path.slice(0, 200) }] as never };
    }
    // One problem per field: the first TypeBox reports (a missing field's "required" comes before
    // its type error, which says nothing more).
    const error: { message: string; instancePath: string }[] = [];
    const seen = new Set<string>();
    for (const e of check.Errors(value)) {
      if (seen.has(e.path)) continue;
      seen.add(e.path);
      error.push({ message: describeProblem(e, httpPart ?? 'body'), instancePath: e.path });
      if (error.length >= MAX_ERRORS) break;
    }
    return { error: error as never };
  };
};
