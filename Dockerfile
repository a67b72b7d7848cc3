# ClearPath Realtime: one image for the core, the bridge and the simulator.
FROM node:20-bookworm-slim AS web
WORKDIR /src
COPY package.json package-lock.json ./
COPY clients/web/package.json clients/web/
RUN npm ci --no-audit --no-fund
COPY protos protos
COPY clients/web clients/web
RUN npm -w clients/web run build

FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY clearpath clearpath
COPY core core
COPY bridge bridge
COPY clients/__init__.py clients/py.typed clients/
COPY clients/cli clients/cli
COPY clients/sdk clients/sdk
COPY clients/simulator clients/simulator
RUN pip install --no-cache-dir -c constraints.txt '.[redis]'
COPY --from=web /src/clients/web/dist /app/dist
ENV CLEARPATH_BRIDGE_STATIC_DIR=/app/dist
EXPOSE 50051 8000
ENTRYPOINT ["clearpath"]
# Listening on every interface needs authentication: set CLEARPATH_CORE_AUTH_SECRET and
# CLEARPATH_BRIDGE_AUTH_SECRET (the same secret), or it refuses to start (README, Security).
CMD ["serve", "--host", "0.0.0.0", "--http-host", "0.0.0.0"]
