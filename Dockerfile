# syntax=docker/dockerfile:1
#
# Spate's container image (docs/operations.md, "Deployment"). Two stages: `deps` installs the production
# dependencies only (esbuild among them: `npm start` runs an esbuild bundle of the TypeScript), and
# `runtime` copies them beside the source and runs as the unprivileged `node` user, which the embedded PostgreSQL
# needs anyway: PostgreSQL refuses to run as root.
#
#   docker build -t spate .
#   docker run --rm -p 8000:8000 -v spate-data:/data -e JWT_SECRET="$(openssl rand -base64 48)" spate

ARG NODE_IMAGE=node:24-trixie-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# npm ci runs patch-package (postinstall): a fix of the PostgreSQL driver that upstream has not released (patches/).
COPY patches ./patches
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
# tini as PID 1 forwards SIGTERM and SIGINT to node and reaps the processes the embedded PostgreSQL leaves behind.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data
WORKDIR /app
# Owned by root and read-only to the service: it writes only to DATA_DIR and the temporary directory.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
# The bundle `npm start` runs (docs/startup.md), built now: the running container's files are read-only to it.
RUN node scripts/start.mjs --build-only
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8000
# Liveness only: a database that is down makes the service unready, not unhealthy (the contract), and the
# orchestrator's readiness probe uses /health/ready. Node's own fetch, since slim images have no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.PORT + '/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
# package.json's start script without npm: npm would stand between the signal and node.
CMD ["node", "--expose-gc", "--heap-growing-percent=50", "--max-semi-space-size=16", "scripts/start.mjs"]
