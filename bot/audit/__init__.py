"""The provable audit log: hash chain, sealer, signed checkpoints, verify, export, queries."""
