"""The hypercall interface: what a guest reaches with VMCALL.

Models: BitVisor's ``vmmcall`` mechanism: ``abi`` (return codes and limits as data: the
guest-visible contract, ``docs/ABI.md`` its source of truth), ``spec`` (what a handler gets and
answers, and what each hypercall declares), ``table`` (the 128-slot table: number -> handler, the
dispatch of a ``Hypercall`` exit), one module per built-in hypercall (``get_vmmcall_number``,
``get_status``, ``update_signatures``) and ``builtin`` (the one list of them: a hypercall's position
there is its number). Nothing is re-exported here, so that ``updates/`` can import ``abi`` without
importing the handlers, which import ``updates/``.

Follows: ``docs/ABI.md``. Leaves out: BitVisor's other services (``dbgsh``, ``loadcfg``...).

The guest controls every argument register and the memory behind it: see each module.
"""
