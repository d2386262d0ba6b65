"""Training drafter modules (docs/heads.md); the modules themselves live in
``evspec.modules``.

* data: ``collect`` (both models teacher-forced on the target's answer), ``store``
  (chunked safetensors), ``batch`` (padded batches), ``requests`` (manifest -> requests),
  ``world_subset``;
* training: ``objectives`` (KL, CE; auxiliaries), ``tasks`` (loss per kind), ``train``
  (the loop), ``curves`` (loss plot);
* evaluation and shipping: ``eval`` (engine + offline), ``report`` (tables), ``ship``.

Nothing here is imported by ``evspec`` at start-up.
"""
