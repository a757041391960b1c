# syntax=docker/dockerfile:1
# Course-enrollment engine. One image runs the server (default CMD), the batcher
# (`node dist/src/cli/batcher.js`) and the migrations (`node dist/src/cli/migrate.js`).

# ---- build: full dependency tree, TypeScript -> dist/ ------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY scripts ./scripts
# tsc emits only .js; the build script copies non-TypeScript assets (admin pages, etc.) beside them.
RUN npm run build

# ---- runtime: production dependencies only, non-root --------------------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
# A container must listen on every interface to be reachable, so the demo (public passwords) is
# off unless DEMO_DATA=true is passed on purpose.
ENV HOST=0.0.0.0 \
    DEMO_DATA=false
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# Migrations are read from ./sql at runtime.
COPY sql ./sql
# Embedded mode keeps its files (PGlite, generated JWT secret) under ./data; it must be writable.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# V8 and allocator settings of scripts/engine-flags.json (docs/memory.md); the image runs full mode,
# so not its `embedded` ones.
ENV MALLOC_ARENA_MAX=2
CMD ["node", "--liftoff-only", "dist/src/main.js"]
