"""The drafter-module task: modules of ``evspec.modules`` trained on pairs collected from
both models (docs/heads.md).

* data: ``collect`` (both models teacher-forced on the target's answer), ``store``
  (chunked safetensors), ``batch`` (padded batches), ``requests`` (manifest -> requests),
  ``world_subset``;
* training: ``objectives`` (KL, CE; auxiliaries), ``tasks`` (loss per kind), ``train``
  (the loop; schedule and checkpoint: ``evspec.training.schedule`` /
  ``evspec.training.checkpoint``), ``distributed`` (data-parallel replicas), ``curves``
  (loss plot);
* evaluation and shipping: ``eval`` (engine + offline), ``report`` (tables), ``ship``.
"""
