"""Engines drive any Scheduler through schedule, run, update: the discrete-event simulator
(`simulator`), real devices by the clock (`wallclock`) and the asyncio serving front
(`serving`), with fault injection (`faults`). They share one step accounting (`accounting`),
one set of contract checks (`contract`) and one `Result` (`result`)."""
