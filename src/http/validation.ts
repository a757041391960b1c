import type { FastifySchemaCompiler } from 'fastify';
import { Kind, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';

/**
 * Validates requests with TypeBox's compiled checks instead of Fastify's default Ajv, because the
 * API needs two different policies that one Ajv instance cannot have at once:
 *
 * - JSON bodies are checked exactly as sent: `"course_id": "12"` is a 400 (the Go service's JSON
 *   decoding refused it too) and unknown members are refused rather than silently dropped.
 * - Query strings and path params always arrive as strings, so integer and boolean fields are
 *   converted first, but strictly: only plain decimal digits become integers. (TypeBox's own
 *   `Value.Convert` would turn "12.5" into 12 and "true" into 1.)
 */

/** At most this many problems are listed in a 400's reason; enough to fix a request, not a DoS. */
const MAX_ERRORS = 5;

const INTEGER = /^-?\d{1,16}$/;
const NUMBER = /^-?\d{1,16}(\.\d{1,16})?$/;

function typesOf(schema: TSchema): string[] {
  if (schema[Kind] === 'Union' && Array.isArray(schema.anyOf)) return (schema.anyOf as TSchema[]).flatMap(typesOf);
  return typeof schema.type === 'string' ? [schema.type] : [];
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

/** Fastify's validator compiler for every route: strict bodies, strictly converted query strings and params. */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const check = TypeCompiler.Compile(schema);
  const convert = httpPart === 'querystring' || httpPart === 'params' || httpPart === 'headers';
  return (input: unknown) => {
    const value = convert ? convertFlatObject(schema, input) : input;
    if (check.Check(value)) return { value };
    const error: { message: string; instancePath: string }[] = [];
    for (const e of check.Errors(value)) {
      error.push({ message: e.message, instancePath: e.path });
      if (error.length >= MAX_ERRORS) break;
    }
    return { error: error as never };
  };
};
