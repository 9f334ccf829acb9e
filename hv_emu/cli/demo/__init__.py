"""``hv-emu demo``: the twelve-step story of ``README.md`` told with the real pieces.

Models: a publisher, a guest and the hypervisor, one chapter a module: ``story`` (keys, bundles,
VMCALL updates, tampering and replay), ``storage`` (the disk writes caught) and ``network`` (an
update pushed over UDP with loss, and cut-network).

Follows: ``README.md`` ("What make demo shows"). Leaves out: nothing the README promises. The guest
programs are the shipped ones; the user controls only the working directory.
"""
