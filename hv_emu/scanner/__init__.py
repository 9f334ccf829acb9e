"""The signature scanner: ClamAV body signatures matched over streams of bytes.

Models: the ClamAV ``.db``/``.ndb`` body-signature language (``signatures``: lines; ``body``: the
hex body grammar), the matcher built from it (``engine``: literal anchors found by a literal
engine, then verified), the literal engines (``engines/``: Hyperscan streaming and the
pyahocorasick reference), logical signatures (``logical``: ``.ldb`` lines; ``logical_expr``:
their expressions; ``logical_match``: the table and each stream's counts) and the database in
force with its atomic swap (``database``).

Follows: ClamAV's signature documentation and libclamav's matcher, checked against ``clamscan``
(``docs/SIGNATURES.md``). Leaves out: what ``docs/SIGNATURES.md`` lists as refused. The guest
controls the scanned bytes; the publisher (or a user) controls the database text.
"""
