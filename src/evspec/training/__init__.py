"""Training every trainable thing, as tasks over one schedule, checkpoint and resume rule.

* ``loop``       -- the step core both loops run: ``apply_gradients`` (backward, replica
  reduce, clip, optimiser and schedule step) and ``due`` (periodic actions).
* ``schedule``   -- ``warmup_cosine``: linear warm-up, then cosine decay to a floor.
* ``config``     -- ``config_keys``: a run's ``train_config.json`` read back, unknown keys
  refused (torch-free).
* ``checkpoint`` -- ``TrainState`` (``train_state.pt``: optimiser, schedule, step, RNG),
  the run folder's files, and the resume rule (``refuse_other_settings``).
* ``world/``     -- the small world target (Video-LLaVA architecture) and drafter (EventGPT
  architecture) trained on a generated world (WORLD.md), their evaluation, and packing the
  shipped assets (docs/world_training.md).
* ``heads/``     -- drafter modules (``evspec.modules``) trained on pairs collected from both
  models: collection, objectives, tasks, evaluation, reports, shipping (docs/heads.md).

Nothing here is imported by ``evspec`` at start-up, and ``evspec.decoding`` imports none of it.
"""
