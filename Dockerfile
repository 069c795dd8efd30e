# The operator image: `labtune operator run` with the [operator] extra, as the non-root UID 65532
# (the UID the operator also gives job pods, operator/podspec.py JOB_UID). The chart's Deployment
# passes only options (--all-namespaces or --namespace, ports, job images).
# Build from the repository root: docker build -t ghcr.io/labtune/operator:0.1.0 .
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY labtune labtune
COPY operator operator
COPY generator generator
COPY trainer trainer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/labtune-*.whl)[operator]" && rm -rf /wheels \
 && groupadd --gid 65532 labtune \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin labtune
USER 65532:65532
ENTRYPOINT ["labtune", "operator", "run"]
