"""A local Kubernetes control plane built from the published Go modules (tests, local demo).

`binaries.ensure_binaries()` builds or finds etcd and the Kubernetes control plane binaries;
`controlplane.ControlPlane` runs them. Nothing is imported here, so that `labtune --help` stays
fast (the control plane needs pydantic, cryptography and yaml).
"""
