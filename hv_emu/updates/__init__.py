"""The one update pipeline: a signed database, by VMCALL or from the network.

Models: the bundle format (``format``), signature verification against trusted keys
(``verify``), the persisted version counter and database (``state``), the decision
(``service``) and the compile and swap (``compile_worker``), and the network path's packets and
sans-IO receiver (``packets``, ``receiver`` with its ``admission``, ``session`` and
``receiver_stats``, its raw front path ``front`` and ``prefilter``, and ``batch``: those checks
for a whole batch of datagrams by array operations).

Follows: ``docs/UPDATE-FORMAT.md`` and ``docs/PROTOCOL.md``. Leaves out: key rotation.

Who controls what: the guest and the network control every byte of an update; only a valid
signature makes it count.
"""
