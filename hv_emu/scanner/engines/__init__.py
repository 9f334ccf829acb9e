"""The literal engines behind the scanner: Hyperscan (streaming) and pyahocorasick (reference).

Models: a multi-literal search that keeps its state across chunks of a stream. The modules are
named ``hyperscan_stream`` and ``aho_corasick`` rather than after the libraries they wrap, so that
no module shadows a third-party name. Follows: the ``LiteralMatcher`` protocol of
``hv_emu/scanner/engine.py``. Leaves out: regular expressions (the verifier handles wildcards).
The guest controls the scanned bytes.
"""
