"""The networkx cluster: collectives cost what the links they cross allow."""

from __future__ import annotations

import networkx as nx
import pytest

from batchlab.core import Batch, ConfigError
from batchlab.costmodel import Cluster, get_gpu, make_devices

H100 = get_gpu("h100")  # NVLink 450 GB/s per direction, one 50 GB/s NIC per GPU


def _ring_factor(n):
    return 2 * (n - 1) / n


def test_graph_has_gpus_switches_and_fabric():
    c = Cluster.build(H100, 16)
    gpus = [v for v, d in c.graph.nodes(data=True) if d.get("kind") == "gpu"]
    assert len(gpus) == 16 and c.num_nodes == 2
    assert nx.is_connected(c.graph)
    kinds = {d["kind"] for *_, d in c.graph.edges(data=True)}
    assert kinds == {"nvlink", "network"}
    assert all(d["bandwidth"] > 0 for *_, d in c.graph.edges(data=True))
    # one server: no fabric at all
    assert ("fabric",) not in Cluster.build(H100, 8).graph


def test_all_reduce_inside_a_server_runs_at_nvlink_speed():
    c = Cluster.build(H100, 8)
    cost = c.all_reduce(range(8))
    assert cost.seconds_per_byte == pytest.approx(_ring_factor(8) / 450e9)
    assert c.bottleneck(range(8))["kind"] == "nvlink"


def test_all_reduce_across_servers_is_bounded_by_the_nics():
    c = Cluster.build(H100, 16)
    # 8 rings, each leaving a server through its own 50 GB/s NIC: 400 GB/s in all
    assert c.all_reduce(range(16)).seconds_per_byte == pytest.approx(_ring_factor(16) / 400e9)
    # two GPUs per server: only two NICs carry the ring traffic
    assert c.all_reduce([0, 1, 8, 9]).seconds_per_byte == pytest.approx(_ring_factor(4) / 100e9)
    assert c.bottleneck([0, 1, 8, 9])["kind"] == "network"
    assert c.all_reduce([0, 1, 8, 9]).latency > c.all_reduce([0, 1, 2, 3]).latency


def test_the_slowest_link_bounds_the_ring():
    c = Cluster.build(H100, 8)
    c.graph.edges[("gpu", 3), ("switch", 0)]["bandwidth"] = 10e9  # one degraded NVLink
    assert c.all_reduce(range(8)).seconds_per_byte == pytest.approx(_ring_factor(8) / 10e9)
    assert c.all_reduce([0, 1, 2]).seconds_per_byte == pytest.approx(_ring_factor(3) / 450e9)


def test_pcie_cards_talk_over_pcie():
    c = Cluster.build(get_gpu("rtx4090"), 4)
    assert c.bottleneck(range(4))["kind"] == "pcie"
    assert c.all_reduce(range(4)).seconds_per_byte == pytest.approx(_ring_factor(4) / 32e9)


def test_all_to_all_and_p2p():
    c = Cluster.build(H100, 16)
    # inside a server each GPU sends 7/8 of its payload over its own NVLink
    assert c.all_to_all(range(8)).seconds_per_byte == pytest.approx((7 / 8) / 450e9)
    # across two servers half of every payload crosses a 50 GB/s NIC
    assert c.all_to_all(range(16)).seconds_per_byte == pytest.approx((8 / 16) / 50e9)
    assert c.p2p(0, 1).seconds_per_byte == pytest.approx(1 / 450e9)
    assert c.p2p(0, 8).seconds_per_byte == pytest.approx(1 / 50e9)
    assert c.p2p(3, 3).time(1e9) == 0.0
    assert c.all_reduce([5]).time(1e9) == 0.0


def test_bad_groups_are_refused():
    c = Cluster.build(H100, 8)
    with pytest.raises(ConfigError, match="GPU group"):
        c.all_reduce([0, 8])
    with pytest.raises(ConfigError, match="GPU group"):
        c.all_to_all([1, 1])


def test_tensor_parallel_across_servers_costs_more_than_inside_one():
    inside = make_devices("llama-3-70b", "h100", 8)[0]
    across = make_devices("llama-3-70b", "h100", 16)[0]
    batch = Batch.decode(range(32), [1000] * 32)
    a, b = inside.run(batch).cost, across.run(batch).cost
    assert b.communication > 3 * a.communication
    # a smaller node size puts the same 8 GPUs on two servers
    split = make_devices("llama-3-70b", "h100", 8, gpus_per_node=4)[0]
    assert split.run(batch).cost.communication > a.communication
