"""Pipelines: m micro-batches through a chain of stages, in closed form and as a task graph.

Each stage (a block of layers, or a link between two blocks) serves the micro-batches one
after another, and a micro-batch enters a stage only when it has left the previous one. For
m identical micro-batches with stage times s_1..s_p this flow shop finishes after
    sum(s) + (m - 1) * max(s),
which for equal stages is the familiar (m + p - 1) stage times: with m < p most stages idle
most of the time (the bubble). `critical_path` builds the micro-batch x stage task graph with
networkx and measures its longest path; tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx


def pipeline_makespan(stage_times: Sequence[float], num_micro_batches: int) -> float:
    """Closed form: the time m identical micro-batches take through the stages."""
    if not len(stage_times):
        return 0.0
    return float(sum(stage_times)) + (num_micro_batches - 1) * float(max(stage_times))


def bubble_fraction(stage_times: Sequence[float], num_micro_batches: int,
                    makespan: float | None = None) -> float:
    """Share of the stages' time spent idle while the pipeline runs."""
    if makespan is None:
        makespan = pipeline_makespan(stage_times, num_micro_batches)
    if makespan <= 0 or len(stage_times) == 0:
        return 0.0
    busy = num_micro_batches * float(sum(stage_times))
    return max(0.0, 1.0 - busy / (len(stage_times) * makespan))


def task_graph(stage_times: Sequence[float], num_micro_batches: int) -> nx.DiGraph:
    """Task (i, j) = micro-batch i on stage j, with edges for both precedences."""
    g = nx.DiGraph()
    p = len(stage_times)
    for i in range(num_micro_batches):
        for j in range(p):
            g.add_node((i, j), duration=float(stage_times[j]))
            if j + 1 < p:
                g.add_edge((i, j), (i, j + 1))  # the micro-batch moves on to the next stage
            if i + 1 < num_micro_batches:
                g.add_edge((i, j), (i + 1, j))  # the stage takes the next micro-batch
    return g


def critical_path(stage_times: Sequence[float], num_micro_batches: int) -> float:
    """Longest path through the task graph, counting each task's duration once."""
    g = task_graph(stage_times, num_micro_batches)
    if g.number_of_nodes() == 0:
        return 0.0
    # put each task's duration on the edges entering it, from a common start vertex
    weighted = nx.DiGraph()
    for v, data in g.nodes(data=True):
        weighted.add_edge("start", v, weight=data["duration"])
    for u, v in g.edges:
        weighted.add_edge(u, v, weight=g.nodes[v]["duration"])
    return float(nx.dag_longest_path_length(weighted, weight="weight"))
