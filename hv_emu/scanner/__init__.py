"""The signature scanner: ClamAV body signatures matched over streams of bytes.

Models: the ClamAV ``.db``/``.ndb`` body-signature language (``signatures``: lines; ``body`` and
``body_parts``: the hex body grammar; ``kinds``: what every database file shares), the matcher
built from it (``engine``: literal anchors found by a literal engine, then verified), the
literal engines (``engines/``: Hyperscan streaming and the
pyahocorasick reference), logical signatures (``logical``: ``.ldb`` lines; ``logical_expr``:
their expressions; ``logical_match``: the table and each stream's counts), the database in
force with its atomic swap (``database``), and ``hv-emu scan``'s cache of compiled databases
(``cache``: the store; ``cache_entry``: an entry, decoded lazily; ``record``: value classes
that need no ``dataclasses`` import).

Follows: ClamAV's signature documentation and libclamav's matcher, checked against ``clamscan``
(``docs/SIGNATURES.md``). Leaves out: what ``docs/SIGNATURES.md`` lists as refused. The guest
controls the scanned bytes; the publisher (or a user) controls the database text.
"""
