// Swagger UI for the gateway's /docs (RTM_ENV=dev only), from the vendored swagger-ui-dist:
// no CDN, no online validator badge.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
