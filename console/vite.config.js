import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// Swagger UI for /docs (api/routers/console.py serves these from the bundle's docs/): npm's swagger-ui-dist,
// whose 5.x renders the OpenAPI 3.1 document FastAPI writes (PyPI's swagger-ui-bundle ships 4.15, which cannot).
const SWAGGER_FILES = ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"];

function swaggerUi() {
  const dist = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  return {
    name: "segops-swagger-ui",
    generateBundle() {
      for (const name of SWAGGER_FILES) {
        this.emitFile({ type: "asset", fileName: `docs/${name}`, source: readFileSync(join(dist, name)) });
      }
    },
  };
}

// The bundle is built into the API package, which `segops serve` serves at / (api/routers/console.py).
// `npm run dev` proxies the API to a `segops serve` on :8000.
export default defineConfig({
  plugins: [preact(), swaggerUi()],
  build: { outDir: "../api/console_dist", emptyOutDir: true, assetsInlineLimit: 0, chunkSizeWarningLimit: 600 },
  server: { proxy: { "/api": "http://127.0.0.1:8000", "/docs": "http://127.0.0.1:8000", "/openapi.json": "http://127.0.0.1:8000" } },
  test: { include: ["tests/**/*.test.js"], environment: "node" },
});
