"""The disk path: an ATA channel with bus-master DMA, and the hook the inspection policy uses.

Models: the primary IDE channel of a PIIX3: the task-file registers (``ata_registers``), the
command engine with PIO and DMA transfers (``ata``), the bus-master IDE function and its PRD table
walk (``busmaster``), the image behind it (``disk``) and the storage observer through which every
write is shown to the policy before it lands (``observer``).

Follows: ATA/ATAPI-6 and the SFF-8038i bus-master specification (see each module). Leaves out:
ATAPI, the secondary channel, IRQ delivery. The guest controls every register, every command and
every PRD entry: see each module's threat table.
"""
