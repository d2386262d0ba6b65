"""Drafter modules: the trainable networks drafters decode with, as inference code.

* adapters over EventGPT's hidden states: ``note_adapter``, ``bottleneck``,
  ``attention_adapter``, ``aligner`` (all ``adapter_base.HiddenAdapter``), built from
  ``layers``;
* heads: ``head`` (event/target head), ``head_static`` (fixed-size buffers and CUDA-graph
  steps), ``head_fused`` (event memory folded into the cross-attention);
* ``lora`` (PEFT on EventGPT, lazy), ``memory`` (EventGPT's event embedding / prompt states);
* ``checkpoint`` (the module folder: kinds, config, weights, target fingerprint) and
  ``options`` (shape options -> a new module's config).

Nothing here imports training code; ``evspec.decoding.drafters`` imports what it needs lazily.
"""
