"""evspec: lossless speculative decoding for video LLMs, drafted from the event camera.

Layers (nothing imports upward): ``data`` -> ``models`` -> ``adapters`` -> ``decoding``
-> ``bench`` -> ``cli``.  See the README's architecture section.
"""

__version__ = "0.1.0"
