"""`Cluster`: GPUs and the links between them as a networkx graph, and what collectives cost.

The graph has one vertex per GPU, one per server's switch (the NVSwitch, or the PCIe host
bridge for cards without NVLink) and one for the scale-out fabric (InfiniBand/Ethernet). Each
GPU has a scale-up edge to its server's switch and a NIC edge to the fabric ("rail" layout, as
in DGX/HGX systems with one NIC per GPU). Every edge carries its per-direction `bandwidth`
(bytes/s) and `latency` (s); traffic is routed along the cheapest path per byte, so NVLink is
preferred inside a server and the NICs carry traffic between servers.

A collective's time is derived from the links it crosses, never from a global constant:
- ring all-reduce: 2(n-1)/n of the message crosses every hop of the ring; the most loaded
  link (load / bandwidth) bounds the ring. Like NCCL, a group spanning servers runs one ring
  per GPU of a server, rotated so that each ring leaves a server through a different NIC;
- all-to-all: every GPU sends 1/n of its payload to every other, to all peers at once (as
  NCCL's and DeepEP's all-to-all kernels post every send before waiting on any), so it pays
  the longest path's latency once; the most loaded directed link bounds its bandwidth;
- point-to-point (pipeline sends): the narrowest link on the path.
Costs are returned as (seconds per byte at full link rate, latency); the caller applies the
communication efficiency. They are computed once per group when a device is built.
"""

from __future__ import annotations

from collections import defaultdict

import attrs
import networkx as nx

from batchlab.core import ConfigError

from .gpus import GPUSpec


@attrs.frozen(slots=True)
class CollectiveCost:
    """Time of a collective = latency + bytes * seconds_per_byte / efficiency."""

    seconds_per_byte: float = 0.0
    latency: float = 0.0

    def time(self, num_bytes: float, efficiency: float = 1.0) -> float:
        if num_bytes <= 0 or self.seconds_per_byte == 0.0:
            return 0.0
        return self.latency + num_bytes * self.seconds_per_byte / efficiency


FREE = CollectiveCost()


def gpu_vertex(i: int) -> tuple:
    return ("gpu", i)


@attrs.define(eq=False)
class Cluster:
    """`num_gpus` GPUs of one kind in servers of `gpus_per_node`, as a networkx graph."""

    gpu: GPUSpec
    num_gpus: int
    gpus_per_node: int
    graph: nx.Graph
    _paths: dict = attrs.field(factory=dict, repr=False)

    @classmethod
    def build(cls, gpu: GPUSpec, num_gpus: int, gpus_per_node: int | None = None) -> "Cluster":
        per_node = int(gpus_per_node or gpu.gpus_per_node)
        if num_gpus < 1 or per_node < 1:
            raise ConfigError(f"a cluster needs num_gpus >= 1 and gpus_per_node >= 1, got "
                              f"{num_gpus} and {per_node}")
        g = nx.Graph(name=f"{num_gpus}x{gpu.name}")
        fabric = ("fabric",)
        num_nodes = -(-num_gpus // per_node)
        for i in range(num_gpus):
            node = i // per_node
            g.add_node(gpu_vertex(i), kind="gpu", server=node)
            g.add_edge(gpu_vertex(i), ("switch", node), kind=gpu.link_kind,
                       bandwidth=gpu.link_bandwidth, latency=gpu.link_latency,
                       cost=1.0 / gpu.link_bandwidth)
            if num_nodes > 1:
                g.add_edge(gpu_vertex(i), fabric, kind="network",
                           bandwidth=gpu.network_bandwidth, latency=gpu.network_latency,
                           cost=1.0 / gpu.network_bandwidth)
        return cls(gpu, num_gpus, per_node, g)

    @property
    def num_nodes(self) -> int:
        return -(-self.num_gpus // self.gpus_per_node)

    def server_of(self, i: int) -> int:
        return i // self.gpus_per_node

    # ---- routing -------------------------------------------------------------------------
    def _path_edges(self, a: int, b: int) -> list[tuple]:
        """Directed edges (u, v) from GPU a to GPU b along the cheapest path per byte."""
        key = (a, b)
        if key not in self._paths:
            nodes = nx.shortest_path(self.graph, gpu_vertex(a), gpu_vertex(b), weight="cost")
            self._paths[key] = list(zip(nodes[:-1], nodes[1:]))
        return self._paths[key]

    def _bw(self, edge) -> float:
        return self.graph.edges[edge]["bandwidth"]

    def _latency(self, edges) -> float:
        return sum(self.graph.edges[e]["latency"] for e in edges)

    def _check_group(self, group) -> list[int]:
        group = [int(i) for i in group]
        bad = [i for i in group if not 0 <= i < self.num_gpus]
        if bad or len(set(group)) != len(group):
            raise ConfigError(f"GPU group {group} is not a set of GPUs 0..{self.num_gpus - 1}")
        return group

    # ---- collectives ---------------------------------------------------------------------
    def rings(self, group) -> list[list[int]]:
        """The rings an all-reduce over `group` runs: one, or one per GPU of a server."""
        group = self._check_group(group)
        by_server: dict[int, list[int]] = defaultdict(list)
        for i in sorted(group, key=lambda i: (self.server_of(i), i)):
            by_server[self.server_of(i)].append(i)
        if len(by_server) == 1:
            return [sorted(group)]
        num_rings = min(len(v) for v in by_server.values())
        return [[local[(j + r) % len(local)] for local in by_server.values()
                 for j in range(len(local))] for r in range(num_rings)]

    def all_reduce(self, group) -> CollectiveCost:
        """Ring all-reduce of a message of B bytes held by every GPU of `group`."""
        group = self._check_group(group)
        n = len(group)
        if n == 1:
            return FREE
        rings = self.rings(group)
        load: dict[tuple, float] = defaultdict(float)
        hop_latency = 0.0
        for ring in rings:
            for a, b in zip(ring, ring[1:] + ring[:1]):
                edges = self._path_edges(a, b)
                hop_latency = max(hop_latency, self._latency(edges))
                for e in edges:  # each ring moves 2(n-1)/n of its 1/len(rings) share
                    load[e] += 2 * (n - 1) / n / len(rings)
        per_byte = max(w / self._bw(e) for e, w in load.items())
        return CollectiveCost(per_byte, 2 * (n - 1) * hop_latency)

    def all_to_all(self, group) -> CollectiveCost:
        """All-to-all where every GPU of `group` spreads a payload of B bytes evenly."""
        group = self._check_group(group)
        n = len(group)
        if n == 1:
            return FREE
        load: dict[tuple, float] = defaultdict(float)
        latency = 0.0
        for a in group:
            for b in group:
                if a != b:
                    edges = self._path_edges(a, b)
                    latency = max(latency, self._latency(edges))
                    for e in edges:
                        load[e] += 1.0 / n
        per_byte = max(w / self._bw(e) for e, w in load.items())
        # every GPU posts its n-1 sends at once: the sends share the links (per_byte above),
        # and the slowest path's latency is paid once, not once per peer
        return CollectiveCost(per_byte, latency)

    def p2p(self, a: int, b: int) -> CollectiveCost:
        """A send of B bytes from GPU a to GPU b."""
        if a == b:
            return FREE
        edges = self._path_edges(*self._check_group([a, b]))
        return CollectiveCost(max(1.0 / self._bw(e) for e in edges), self._latency(edges))

    def bottleneck(self, group) -> dict:
        """For reports: the slowest link an all-reduce over `group` crosses."""
        edges = {e for ring in self.rings(group) for a, b in zip(ring, ring[1:] + ring[:1])
                 for e in self._path_edges(a, b)}
        e = min(edges, key=self._bw) if edges else None
        return {} if e is None else {"edge": e, **self.graph.edges[e]}
