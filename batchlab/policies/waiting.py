"""`WaitingQueue`: continuous batching's waiting requests, smallest (sort key, rank) first.

A heap of a million waiting requests (an overloaded run) sifts about twenty levels of tuples
scattered in memory at every pop: ~2 us, several times a step. But entries mostly come in
order: under FCFS every sort key is alike and ranks count up with arrivals. So the entries
that come after the last in order go to a sorted run at the back (a deque: O(1) to
push and pop), and only the others (a preempted request pushed back, a higher priority) to a
heap; the smallest entry is the smaller of the two heads. Entries are distinct (their ranks
are), so the pops come in the same order as from one heap.
"""

from __future__ import annotations

import heapq
from collections import deque

import attrs


@attrs.define
class WaitingQueue:
    """Entries (tuples: sort key, rank, request id, ...): `push`, and `peek`/`pop` the smallest."""

    _heap: list = attrs.field(factory=list)     # entries that came out of order
    _run: deque = attrs.field(factory=deque)    # entries that came in order: sorted

    def __bool__(self) -> bool:
        return bool(self._run) or bool(self._heap)

    def __len__(self) -> int:
        return len(self._run) + len(self._heap)

    def push(self, entry: tuple) -> None:
        run = self._run
        if not run or entry > run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def peek(self) -> tuple | None:
        """The smallest entry, or None if the queue is empty (one call where a loop would
        test the queue and then peek)."""
        heap, run = self._heap, self._run
        if heap and (not run or heap[0] < run[0]):
            return heap[0]
        return run[0] if run else None

    def pop(self) -> tuple:
        """Remove and return the smallest entry (the queue must not be empty)."""
        heap, run = self._heap, self._run
        if heap and (not run or heap[0] < run[0]):
            return heapq.heappop(heap)
        return run.popleft()
