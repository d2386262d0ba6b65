"""Trainable drafter modules and their training (issue 7, docs/heads.md).

* data: ``collect`` (both models teacher-forced on the target's answer), ``store``
  (chunked safetensors), ``batch`` (padded batches), ``requests`` (manifest -> requests),
  ``memory`` (EventGPT's event embedding / prompt states), ``world_subset``;
* modules: ``note_adapter``, ``bottleneck``, ``attention_adapter``, ``aligner`` (all
  ``adapter_base.HiddenAdapter``), ``lora`` (PEFT, lazy), ``head`` (event/target head),
  built from ``layers``;
* training: ``objectives`` (KL, CE; auxiliaries), ``tasks`` (loss per kind), ``train``
  (the loop), ``checkpoint`` (folders, kinds, target fingerprint), ``curves`` (loss plot);
* evaluation and shipping: ``eval`` (engine + offline), ``report`` (tables), ``ship``.

Nothing here is imported by ``evspec`` at start-up; the drafters in
``evspec.decoding.drafters`` import what they need lazily.
"""
