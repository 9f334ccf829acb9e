"""Guest memory as the hypervisor sees it.

Models: the guest-physical RAM shared with the CPU (``guest``: ``GuestMemory``, one mmap, bounds
checked in one place), the guest's own page tables walked without side effects (``walk``: 2-level,
PAE and 4-level paging, as the MMU would), the identity tables the loader builds (``tables``) and
the CPU state a loader hands over (``boot``: mode, entry, stack, paging registers).

Follows: the Intel SDM vol. 3A chapter 4 (paging); rust-vmm ``vm-memory`` (one type owns the
bounds). Leaves out: MMIO regions, memory hot-plug, EPT (the hypervisor sees guest-physical RAM
directly). The guest controls every byte of RAM and its page tables: see each module.
"""
