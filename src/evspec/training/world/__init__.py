"""The world-model task: whole small models trained on a generated world (WORLD.md).

* ``config``       -- ``WorldTrainConfig``: role, preset, steps, optimiser, schedule, AMP.
* ``world_models`` -- build fresh world models from the presets, load and export checkpoints.
* ``dataset``      -- manifest -> tokenised examples; clips pre-decoded once to uint8 arrays.
* ``batching``     -- deterministic batch order, padding, labels, pixel normalisation.
* ``forward``      -- batched training forward of both architectures, loss, batched greedy.
* ``aux_labels``, ``aux_heads`` -- per-patch scene labels and the auxiliary heads on them.
* ``loop``         -- ``train_world_model``: the training loop with validation and resume
  (schedule and checkpoint: ``evspec.training.schedule`` / ``evspec.training.checkpoint``).
* ``scoring``      -- world answers -> structured fields; exact and field-level match.
* ``evaluate``     -- ``evaluate_world``: accuracy per question type and naive acceptance.
* ``report``       -- the evaluation as markdown.
* ``assets``       -- ``pack_world_assets``: checkpoints, tokenizer and sample clips to ship.
"""
