"""Pod networking of the node agent, the way a bridge CNI plugin does it: one network namespace per
pod with a veth pair into a host bridge, an address from the node's pod CIDR, and a default route
through the bridge. The host owns the bridge's first address, so the operator (scraping :9090 at
the pod IP) and host services bound to that address (the demo's git server and teacher) are
reachable both ways. There is no NAT: pods reach the host, not the internet."""

from __future__ import annotations

import ipaddress
import subprocess
import threading

from pydantic import BaseModel


class NetworkError(RuntimeError):
    """iproute2 failed; the message carries its stderr."""


class PodNetwork(BaseModel):
    namespace: str
    """Name under /var/run/netns."""
    ip: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.namespace}"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class Bridge:
    """The host bridge and the addresses handed out on it."""

    def __init__(self, name: str, cidr: str) -> None:
        self.name = name
        self.network = ipaddress.ip_network(cidr)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        self._free = [str(address) for address in hosts]
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Creates the bridge with the gateway address unless it exists (idempotent)."""
        if ip("link", "show", self.name, check=False).returncode != 0:
            ip("link", "add", self.name, "type", "bridge")
        address = f"{self.gateway}/{self.network.prefixlen}"
        if address not in ip("-o", "addr", "show", "dev", self.name).stdout:
            ip("addr", "add", address, "dev", self.name)
        ip("link", "set", self.name, "up")

    def remove(self) -> None:
        ip("link", "del", self.name, check=False)

    def attach(self, key: str) -> PodNetwork:
        """A new network namespace for pod `key` (a short unique id) with its own address."""
        with self._lock:
            if not self._free:
                raise NetworkError(f"no free address left in {self.network}")
            address = self._free.pop(0)
        network = PodNetwork(namespace=f"{self.name}-{key}", ip=address)
        host_side = f"lt{key}"[:15]  # interface names are at most 15 characters
        try:
            ip("netns", "add", network.namespace)
            ip("link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", network.namespace)
            ip("link", "set", host_side, "master", self.name, "up")
            inside = ("-n", network.namespace)
            ip(*inside, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
            ip(*inside, "link", "set", "lo", "up")
            ip(*inside, "route", "add", "default", "via", self.gateway)
        except NetworkError:
            self.detach(network)
            raise
        return network

    def detach(self, network: PodNetwork) -> None:
        """Deletes the namespace (its veth end goes with it) and frees the address."""
        ip("netns", "del", network.namespace, check=False)
        with self._lock:
            if network.ip not in self._free:
                self._free.append(network.ip)  # reused last: a finished pod's status still shows it

    def sweep(self) -> None:
        """Deletes namespaces this bridge's pods left behind (an agent killed without cleanup)."""
        for line in ip("netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(f"{self.name}-"):
                ip("netns", "del", name, check=False)
