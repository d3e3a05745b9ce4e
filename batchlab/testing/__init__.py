"""`batchlab.testing`: the conformance kit that property-tests a policy against the contract.

Install it with `pip install 'batchlab[kit]'` (hypothesis, nothing else). Three lines in a
plugin's own test suite:

    from batchlab.testing import check_policy
    from my_plugin import MyPolicy
    def test_my_policy_conforms(): check_policy(MyPolicy)

`check_policy(factory)` drives fresh policies (`factory()` makes one) through random
interleavings of arrivals, schedule calls, step completions in any order across devices,
aborts, device failures and repairs, and time passing, on 1-3 devices of random KV capacity
(a hypothesis `RuleBasedStateMachine`, `PolicyMachine`), then stops arrivals and runs every
request to its end. It talks to the policy only through the Scheduler protocol and books
everything with the engine's own `RequestTable` and `check_batch`, as the simulator does.
After every step it checks:

- conservation: every request that arrived is exactly one of waiting, running (in one batch,
  once), finished, rejected or aborted; nothing is finished twice;
- memory: every batch passes the engine's rules (`check_batch`: capacity, no request twice,
  only open requests, token counts); the policy's `check_valid()` holds, if it has one; and
  the KV tokens resident on a device never exceed its capacity (see "Memory" below);
- tokens: a finished request emitted exactly its output length, and tokens are counted once;
  no row feeds past prompt + generated;
- causality: arrival <= first scheduled <= first token <= finish; no step ends before it
  launched; time never runs backwards; a wake-up is asked for the future;
- liveness: once arrivals stop, every request that fits in memory finishes within a bound of
  steps (one that cannot fit anywhere may be rejected instead);
- blindness: a request's true output length does not exist until the step that emits its
  last token (the kit decides it then), so a policy cannot depend on it; `oracle=True`
  fills `Request.oracle_output_tokens` for policies that ask for it;
- determinism: replaying the same calls on a fresh policy gives the same plans, and
  `check_determinism` runs the simulator twice and compares the records bit for bit.

A failure is a `PolicyError` that names the policy and the rule, after hypothesis has shrunk
the example to a short list of steps and printed it.

Protocol choices the kit makes (and the engines share):
- Abort while in flight: the policy is told at once (`abort(id)`); the step still completes,
  its `update` still carries the row (what it emitted, finished or not), and the request is
  closed as aborted right after. A policy must accept rows it has forgotten in `update`.
  `abort_in_flight=False` aborts only requests that are not in a running batch.
- A device failure loses the batch in flight and every KV cache on that device; the policy
  hears of it through `lost(device_name, batch, now)` if it has one, else through a fallback
  of calls it already handles (see `batchlab.engines.faults`). The device is offered again
  after it is repaired.
- Memory: the engine cannot see a policy's blocks, and a policy that preempts a sequence frees
  its blocks while the engine still counts its cache until it is recomputed. So the kit
  counts, on each device at each launch, the tokens of the batch plus the cached tokens of
  every other request that later *continues* from that cache on that device (it must have
  been kept all along). A cache that is recomputed from 0 counts as freed as early as
  possible. This never blames a correct policy and catches one that keeps more sequences
  resident than fit, as a double-booking policy does.
"""

try:
    import hypothesis  # noqa: F401  (the kit is built on it; say so before anything else fails)
except ModuleNotFoundError as exc:
    if exc.name != "hypothesis":
        raise
    raise ModuleNotFoundError("batchlab.testing (the conformance kit) needs hypothesis, which "
                              "is not installed: pip install 'batchlab[kit]'",
                              name="hypothesis") from None

from .check import check_determinism, check_policy, policy_state_machine
from .machine import PolicyMachine
from .world import KitDevice

__all__ = ["KitDevice", "PolicyMachine", "check_determinism", "check_policy",
           "policy_state_machine"]
