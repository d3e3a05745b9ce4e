"""Built-in policies, one per file. Each is declared under the `batchlab.policies` entry-point
group in batchlab's pyproject and loaded through `batchlab.policies.discovery`, as a plugin would be."""
