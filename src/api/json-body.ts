/**
 * The JSON request body parser: what `application/json` (and Cinder's own
 * `application/vnd.openstack.volume+json`) bodies become before validation.
 */
import { InvalidInputError } from '../errors/index.ts';

/**
 * The deepest nesting of arrays and objects a body may have. Cinder's deepest
 * bodies (a connector inside an attachment, a group's specs) are four levels;
 * far deeper ones are refused before they are parsed, so that no later step
 * (validation, its message, a view) can recurse through them and overflow the stack.
 */
export const MAX_BODY_DEPTH = 100;

/**
 * How deeply `text` nests arrays and objects, counted up to `limit + 1`
 * (the scan stops there). Brackets inside strings do not count. The text need
 * not be valid JSON: JSON.parse judges that afterwards.
 */
export function nestingDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return deepest;
}

/**
 * Parses a JSON request body. An empty body is no body (some clients send the
 * content type on DELETE): undefined.
 * @throws InvalidInputError `Malformed request body` for text that is not JSON,
 *   and one naming the limit for a body nested deeper than {@link MAX_BODY_DEPTH}.
 */
export function parseJsonBody(body: string): unknown {
  const text = body.trim();
  if (text === '') return undefined;
  if (nestingDepth(text, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) {
    throw new InvalidInputError(`Malformed request body: nested deeper than ${MAX_BODY_DEPTH} levels`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidInputError('Malformed request body');
  }
}
