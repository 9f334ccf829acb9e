"""The emulated devices: each knows offsets within its own block, never port numbers.

Models: the PC hardware a guest drives: the Bochs/QEMU debug console (``debugcon``), VGA text mode
(``vga``), PCI configuration mechanism #1 (``pci``), the hv-emu NIC (``nic``) and the disk
controller with its inspection hook (``storage/``); ``port`` holds the views through which a
device with several port blocks joins the bus. Devices publish events to observers and know
no policy: they never import the scanner, the update code, the network or the CLI (the layer test
enforces it); ``hv_emu/machine.py`` places them at the ports of ``hv_emu/layout.py``.

Follows: vm-superio (device models that know nothing of the VMM, a threat table each). Leaves out:
interrupts (guests poll). The guest controls every register access: see each module.
"""
