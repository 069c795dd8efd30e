# Every target sets up what it needs (venv with Python deps, control-plane binaries) in a cache
# folder outside the clone ($LABTUNE_CACHE, default ~/.cache/labtune) and skips what is there.
.PHONY: test lint typecheck unit integration crds demo demo-down clean

test:            ## lint, type-check, CRD drift check and every test (what CI runs)
	hack/test.sh all

lint:            ## ruff check and format check
	hack/test.sh lint

typecheck:       ## mypy --strict on the installed package layout
	hack/test.sh typecheck

unit:            ## unit tests only (no control plane)
	hack/test.sh unit

integration:     ## integration tests on the local control plane (or USE_EXISTING_CLUSTER=true)
	hack/test.sh integration

crds:            ## regenerate crds/ and the chart's CRDs from the API models
	hack/test.sh crds

demo:            ## the LAB pipeline end to end on a real single-node cluster: images built here, operator via helm, Taxonomy -> SyntheticDataRun -> TuningJob (root)
	hack/demo.sh up

demo-down:       ## stop everything the demo started
	hack/demo.sh down

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
