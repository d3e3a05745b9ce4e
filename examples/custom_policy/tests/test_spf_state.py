"""Property test: random arrivals, steps, finishes and aborts, with check_valid() after each."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from batchlab import AffineDevice, Request, StepResult
from batchlab_spf import ShortestPromptFirst


class Driven(RuleBasedStateMachine):
    """Random arrivals, steps, finishes and aborts; the policy's books must always balance."""

    def __init__(self):
        super().__init__()
        self.policy = ShortestPromptFirst(max_num_seqs=4)
        self.device = AffineDevice(kv_capacity_tokens=2048)
        self.now, self.next_id, self.in_flight = 0.0, 0, None
        self.max_new, self.generated = {}, {}

    @rule(prompt=st.integers(1, 600), max_new=st.integers(1, 64))
    def arrive(self, prompt, max_new):
        self.policy.add(Request(self.next_id, self.now, prompt, max_new), self.now)
        self.max_new[self.next_id], self.generated[self.next_id] = max_new, 0
        self.next_id += 1

    @rule()
    def schedule(self):
        if self.in_flight is None:
            plan = self.policy.schedule(self.now, [self.device])
            self.in_flight = plan.batches.get(self.device.name)

    @rule(data=st.data())
    def finish_step(self, data):
        if self.in_flight is not None:
            batch, self.in_flight = self.in_flight, None
            n = batch.num_seqs
            # a row finishes by chance, and always at its max_new_tokens (the engine's rule)
            early = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
            ids = batch.request_ids.tolist()
            for rid in ids:
                self.generated[rid] += 1
            generated = np.array([self.generated[rid] for rid in ids])
            finished = np.array(early) | (generated >= [self.max_new[rid] for rid in ids])
            self.now += 0.01
            self.policy.update(batch, StepResult(0.01, emitted=np.ones(n, bool),
                                                 finished=finished,
                                                 num_generated=generated), self.now)

    @rule(data=st.data())
    def abort(self, data):
        if self.next_id:
            self.policy.abort(data.draw(st.integers(0, self.next_id - 1)))

    @invariant()
    def books_balance(self):
        self.policy.check_valid()


TestDriven = Driven.TestCase
