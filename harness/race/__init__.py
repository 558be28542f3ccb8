"""The race stage: the rows (schemes, workloads), the scheme modules' builds,
the racer's roles and output, the engine that runs them in a guest, and the
outcomes (run ends, verdicts, controls) decided in one place."""
