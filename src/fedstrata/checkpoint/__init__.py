"""Checkpoints of a federation (Issue 15): the stores (helper ckpt) and the engine
snapshot (:mod:`.snapshot`)."""
