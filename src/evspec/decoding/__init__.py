"""Speculative decoding: the engine, drafters, and the model-free acceptance rule."""
