"""The simulator's event kinds. An event is (time, kind, sequence, payload) on a heap; at one
instant the kind orders them: completions first (they free memory), then migrations ending,
then arrivals, then wake-ups, then failures and repairs."""

DONE, MOVED, ARRIVAL, WAKE, FAIL, REPAIRED = 0, 1, 2, 3, 4, 5

# What handling an event amounted to (bit flags): progress made, or the policy woken.
PROGRESS, WOKEN = 1, 2
