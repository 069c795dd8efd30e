"""Names of the Prometheus metrics job pods serve that the operator reads into status.
The pods may serve more; these are the contract."""

from __future__ import annotations

# Trainer (gauges, no labels unless noted).
TRAIN_STEP = "labtune_train_step"  # optimizer steps done over all phases
TRAIN_TOTAL_STEPS = "labtune_train_total_steps"  # optimizer steps over all phases
TRAIN_EPOCH = "labtune_train_epoch"  # fractional epoch within the current phase
TRAIN_LOSS = "labtune_train_loss"
TRAIN_EVAL_LOSS = "labtune_train_eval_loss"
TRAIN_LEARNING_RATE = "labtune_train_learning_rate"
TRAIN_TOKENS_PER_SECOND = "labtune_train_tokens_per_second"
TRAIN_ETA_SECONDS = "labtune_train_eta_seconds"
TRAIN_PHASE = "labtune_train_phase"  # label phase="<name>"; 1 for the phase training now

# Generator.
GENERATE_LEAVES_DONE = "labtune_generator_leaves_done"  # gauge
GENERATE_LEAVES_TOTAL = "labtune_generator_leaves_total"  # gauge
GENERATE_SAMPLES_GENERATED = "labtune_generator_samples_generated"  # counter (served with _total)
GENERATE_SAMPLES_KEPT = "labtune_generator_samples_kept"  # counter (served with _total)
