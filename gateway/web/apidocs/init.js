// Starts Swagger UI (vendored: see VENDOR.md) on the gateway's own OpenAPI document.
//
// Everything is same-origin: the document is /openapi.json, its `servers` entry is "/", so
// "Try it out" calls this gateway; the bearer token typed into "Authorize" is sent as
// `Authorization: Bearer …` and kept only in this page's memory. No validator badge (it would
// call an outside service), no links to remote specs.
/* global SwaggerUIBundle */
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  queryConfigEnabled: false,
  persistAuthorization: false,
  displayRequestDuration: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
