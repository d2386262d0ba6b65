"""The synthetic world (WORLD.md): scenes rendered to RGB video *and* a simulated event
stream of the same scene, questions with answers in two styles, and the world tokenizer.

Modules (one concept each):

* ``tables``    -- the fixed vocabulary: shapes, colours, motions, phrasings, prompts.
* ``palette``   -- colours with exactly set luminance (hue invisible to events).
* ``scene``     -- ``SceneConfig``, ``SceneSpec`` and ``sample_scene``.
* ``render``    -- anti-aliased rendering to RGB frames and luminance.
* ``simulate``  -- the per-pixel log-intensity event simulator.
* ``questions`` -- question types, both answer styles, structured fields.
* ``config``    -- ``WorldConfig``, the generator's one config.
* ``clip``      -- one clip in memory (``make_clip``), seeded from (seed, index).
* ``splits``    -- deterministic train / validation / test assignment.
* ``generate``  -- ``generate_world``: clips to disk, manifest, tokenizer (worker pool).
* ``tokenizer`` -- the world's word-level tokenizer pair (imports ``tokenizers`` lazily).

Nothing here imports torch.
"""
