"""Recordings on disk -> model inputs (uint8 RGB arrays), torch-free.

Modules (one concept each):

* ``errors``    -- ``DataError``: every bad-input error names the file, the field and the problem.
* ``events``    -- ``EventStream``: x, y, t (µs), p plus sensor size, validated on construction.
* ``clipio``    -- the project's own events format (``.npz``, no pickle) and ``load_events``
  dispatching on suffix to the research ``.npy`` loader and the DSEC h5 reader.
* ``research_npy`` -- the research's pickled-dict ``.npy`` files, read by a restricted unpickler.
* ``dsec_h5``   -- DSEC ``events.h5`` windows read through ``ms_to_idx`` (``dsec`` extra).
* ``windows``   -- time / count windows, durations, the EventGPT window-length warning.
* ``render``    -- EventGPT's event images (equal-count chunks, white canvas, last event wins).
* ``video``     -- read 8 uniformly sampled RGB frames; write mp4 or PNG folders.
* ``manifest``  -- the dataset schema (JSON), load / save / check.
* ``eventgpt_import`` -- importer for the research's ``EventGPT_Instruction_Subset.json``.
* ``dsec``      -- the DSEC clip builder (``evspec data dsec``); ``dsec_questions`` its
  question sets (data).
* ``loading``   -- a manifest entry -> (video frames, event images) for ``Request``.
* ``images``    -- event images of a file written as PNGs (``evspec data render``).
* ``atomic``    -- write-to-temp-then-rename helpers (no half-written files or clips).
* ``world``     -- the synthetic scene suite (its own package).

Nothing here imports torch (a test checks it); CLIP preprocessing happens in the model wrappers.
"""
