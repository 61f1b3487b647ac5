# syntax=docker/dockerfile:1.7
# One image for every Bildungsraum process; the command picks the process (see deploy/README.md):
#   python -m services.<name> api | events | migrate     (catalog, matching, notifications, identity)
#   celery -A services.notifications.worker:celery_app worker | beat
#   python -m services.portal
#   python -m deploy.tenants sync FILE                    (tenants as data, deploy/k8s/tenants)
# Dependencies come pinned, with hashes, from requirements.lock (`make lock` writes it).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: wheels for the locked dependencies and the project, with the compilers they may need
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential=12.9 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock ./
# PyTorch's CPU build (torch==…+cpu in the lock) is on its own index, not on PyPI
RUN pip wheel --no-cache-dir --require-hashes --extra-index-url https://download.pytorch.org/whl/cpu \
      --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml ./
COPY runtime ./runtime
COPY contracts ./contracts
COPY services ./services
COPY deploy/__init__.py deploy/tenants.py ./deploy/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- run: the interpreter, the installed wheels and nothing to build with
FROM ${PYTHON_IMAGE} AS run
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BR_ENV=production \
    BR_HTTP_HOST=0.0.0.0
RUN groupadd --system --gid 10001 bildungsraum \
 && useradd --system --uid 10001 --gid bildungsraum --no-create-home --shell /usr/sbin/nologin bildungsraum
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl \
 && rm -rf /wheels
WORKDIR /app
# Read-only root filesystem: nothing is written at run time but /tmp (an emptyDir in Kubernetes).
USER 10001:10001
EXPOSE 8000
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m"]
CMD ["services.identity", "api"]
