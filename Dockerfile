# The operator image: `labtune operator run` with the [operator] extra, as the non-root UID 65532
# (the UID the operator also gives job pods, operator/children/pod_template.py JOB_UID). The chart's Deployment
# passes only options (--all-namespaces or --namespace, ports, job images).
#
# Build from the repository root: docker build -t ghcr.io/labtune/operator:0.1.0 .
# Offline, as `labtune-dev images build` does (buildah or podman: docker build has no --volume), from
# a folder of the wheels images/requirements/operator.txt and build.txt pin:
#   buildah bud --volume WHEELHOUSE:/wheels:ro \
#     --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
#     --build-arg BASE=<an image with python3 and its venv module> \
#     -t ghcr.io/labtune/operator:0.1.0 .
ARG BASE=python:3.11-slim
FROM ${BASE}
# pip's own settings, given as build args (none by default: pip uses PyPI).
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PATH=/opt/labtune/bin:$PATH
RUN groupadd --gid 65532 labtune \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin labtune
# The dependencies, pinned (labtune-dev images lock compiles the file from pyproject.toml), in a layer
# of their own: a change to the source below reuses it. pip runs from a throwaway venv, so that the
# image's venv holds no pip or setuptools (25 MB).
COPY images/requirements/operator.txt /opt/labtune/requirements.txt
RUN python3 -m venv --without-pip /opt/labtune \
 && python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip --python /opt/labtune/bin/python install --no-cache-dir -r /opt/labtune/requirements.txt \
 && rm -rf /tmp/pip
# No README.md (the wheel's long description): the image needs none, and a docs change must not
# rebuild the source layer.
COPY pyproject.toml /tmp/src/
COPY labtune /tmp/src/labtune
COPY operator /tmp/src/operator
COPY generator /tmp/src/generator
COPY trainer /tmp/src/trainer
RUN touch /tmp/src/README.md \
 && python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip --python /opt/labtune/bin/python install --no-cache-dir --no-deps /tmp/src \
 && rm -rf /tmp/pip /tmp/src
USER 65532:65532
ENTRYPOINT ["labtune", "operator", "run"]
