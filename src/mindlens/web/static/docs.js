// Renders /openapi.json as a list of operations (an offline stand-in for Swagger UI).
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function schemaFields(spec, content) {
  const body = content && (content["multipart/form-data"] || content["application/x-www-form-urlencoded"]);
  if (!body) return [];
  let schema = body.schema;
  if (schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  return Object.entries(schema.properties || {}).map(([name, p]) => [name, p.description || "", (schema.required || []).includes(name)]);
}

fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  const main = document.getElementById("api");
  main.replaceChildren(el("p", spec.info.description || ""),
    el("p", "Every call but /api/health needs Authorization: Bearer <token> when the server was started with --token."));
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [verb, op] of Object.entries(ops)) {
      const sec = el("section", null, "col");
      sec.append(el("h2", `${verb.toUpperCase()} ${path}`), el("p", op.description || op.summary || ""));
      const fields = [...(op.parameters || []).map((p) => [p.name, (p.description || "") + ` (${p.in})`, p.required]),
                      ...schemaFields(spec, op.requestBody && op.requestBody.content)];
      if (fields.length) {
        const ul = el("ul");
        for (const [name, desc, req] of fields) ul.append(el("li", `${name}${req ? " (required)" : ""}: ${desc}`));
        sec.append(ul);
      }
      main.append(sec);
    }
  }
});
