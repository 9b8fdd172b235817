// Limits and enums exactly as the server defines them, read once from its OpenAPI document
// (public: /openapi.json needs no token), so that the console keeps no copies of them.

export const limits = {};

/** The schema of a property, without the null alternative of an optional one. */
function property(schemas, model, name) {
  const schema = schemas[model].properties[name];
  return schema.anyOf ? schema.anyOf.find((s) => s.type !== 'null') : schema;
}

/** Fill `limits` from the server's document; the console starts once this resolves. */
export async function loadLimits() {
  const response = await fetch('/openapi.json', { cache: 'no-store', credentials: 'omit' });
  if (!response.ok) throw new Error(`cannot read /openapi.json (HTTP ${response.status})`);
  const doc = await response.json();
  const { schemas } = doc.components;
  const pageSize = doc.paths['/v1/agents'].get.parameters.find((p) => p.name === 'limit').schema;
  Object.assign(limits, {
    roles: property(schemas, 'Principal', 'role').enum, // lowest first
    e164: new RegExp(property(schemas, 'Channel', 'number').pattern),
    versionNameChars: property(schemas, 'Publish', 'name').maxLength,
    descriptionChars: property(schemas, 'Publish', 'description').maxLength,
    labelChars: property(schemas, 'Variant', 'label').maxLength,
    maxWeight: property(schemas, 'Variant', 'weight').maximum,
    guardrailMetrics: property(schemas, 'Rule', 'metric').enum,
    guardrailOps: property(schemas, 'Rule', 'op').enum,
    defaultMinCalls: property(schemas, 'Rule', 'min_calls').default,
    maxPageSize: pageSize.maximum,
    tokenNameChars: property(schemas, 'CreateToken', 'name').maxLength,
    tokenMaxExpiresIn: property(schemas, 'CreateToken', 'expires_in').maximum, // seconds
  });
}
