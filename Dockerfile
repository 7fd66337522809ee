# The platform's image (smart-operator, smart-intake and smart-dashboard) for users who
# have Docker:
#
#   docker build -t smartserver/operator:0.1.0 .
#
# `make image` builds the same image without Docker (sim/smart_sim/image/): the same
# Debian and Python, the same non-root account, the same locked dependencies installed
# with --no-deps, the same entry points and environment. tests/unit/test_image.py holds
# this file to sim/smart_sim/image/spec.py, their one source of truth.
ARG DEBIAN_SUITE=bookworm
FROM debian:${DEBIAN_SUITE}-slim

ARG PYTHON_VERSION=3.11
ARG USER=smart
ARG UID=10001
ARG VENV=/opt/smartserver

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && test "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "${PYTHON_VERSION}"

RUN groupadd --system --gid "${UID}" "${USER}" \
 && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin "${USER}"

# The dependencies first (a layer that changes only with the lock), then the project.
COPY sim/smart_sim/image/requirements.lock /tmp/requirements.lock
RUN python3 -m venv "${VENV}" \
 && "${VENV}/bin/pip" install --no-cache-dir --no-deps --requirement /tmp/requirements.lock \
 && rm /tmp/requirements.lock

COPY pyproject.toml README.md /tmp/src/
COPY operator /tmp/src/operator
COPY agent /tmp/src/agent
COPY dashboard /tmp/src/dashboard
COPY sim/smart_sim /tmp/src/sim/smart_sim
# The agent bundle the operator delivers to every server (built from these sources, its
# SHA-256 beside it), then the project itself.
RUN cd /tmp/src \
 && SMARTSERVER_CACHE=/tmp/cache PYTHONPATH=/tmp/src/sim:/tmp/src/operator \
      "${VENV}/bin/python" -m smart_sim.boot.bundle --out /tmp/bundle \
 && mkdir -p /opt/smartserver-agent \
 && mv /tmp/bundle/smart-agent-*.tar.gz /opt/smartserver-agent/smart-agent.tar.gz \
 && sha256sum /opt/smartserver-agent/smart-agent.tar.gz \
      | sed 's|/opt/smartserver-agent/||' > /opt/smartserver-agent/smart-agent.tar.gz.sha256 \
 && "${VENV}/bin/pip" install --no-cache-dir --no-deps /tmp/src \
 && "${VENV}/bin/pip" check \
 && for command in smart-operator smart-intake smart-dashboard; do \
      test -x "${VENV}/bin/${command}"; \
    done \
 && rm -rf /tmp/src /tmp/bundle /tmp/cache

ENV PATH=/opt/smartserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    SMART_AGENT_BUNDLE=/opt/smartserver-agent/smart-agent.tar.gz
LABEL org.opencontainers.image.title="Smart Server" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /
CMD ["smart-operator"]
