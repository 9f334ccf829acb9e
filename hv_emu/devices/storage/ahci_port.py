"""One AHCI port: its registers, its engines (FIS receive, command list) and the completion FISes.

Models: an AHCI 1.x port as QEMU q35's ICH9 AHCI presents it: PxCLB/PxCLBU, PxFB/PxFBU, PxIS
(write 1 to clear), PxIE, PxCMD (ST, FRE, CLO written by the driver; CR and FR follow ST and FRE
at once), PxTFD, PxSIG, PxSSTS, PxSCTL (a COMRESET, DET 1 -> 0, resets the port and resends the
signature), PxSERR (write 1 to clear), PxSACT and PxCI (write 1 to set, cleared by the HBA). When
FRE turns on for the first time after a reset, the disk's signature D2H FIS is posted (PxSIG =
0x101, PxTFD = 0x150, PxIS.DHRS), as QEMU does. A write of PxCI with ST set runs the newly issued
slots at once, lowest first (``ahci_command.py``); each completion writes its FISes into the
received-FIS area (when FR is on) and sets PxTFD and PxIS: a PIO Setup FIS (PSS) before the D2H
Register FIS (DHRS) of a PIO data command, a D2H Register FIS for other commands, a Set Device
Bits FIS (SDBS) clearing the tag's PxSACT bit for NCQ (PxCI is cleared at issue, as QEMU does).
Errors set PxTFD ERR and Error, PxIS.TFES (and HBFS/HBDS with PxSERR.E for a bad address); a
failed command stays set in PxCI and halts the command engine (later slots wait) until the driver
clears ST, which clears PxCI and PxSACT (AHCI 6.2.2.1, as QEMU and libahci's error handler do); a
failed NCQ tag stays set in PxSACT.

Follows: Serial ATA AHCI 1.3.1 3.3 (port registers), 5.3 (port state machines, simplified to
synchronous completions), 10.4 (resets); QEMU ``hw/ide/ahci.c`` (``ahci_port_write``,
``ahci_cond_start_engines``, ``ahci_reset_port``, ``ahci_write_fis_*``) for the values a q35
guest reads; Linux ``libahci`` for the order a driver uses (docs/STORAGE.md, AHCI).

Leaves out: link power management (ICC reads 0), staggered spin-up (SUD/POD stored, no effect),
hot plug, port multipliers, FIS-based switching, cold presence, PxSNTF/PxFBS/PxDEVSLP (read 0),
the BSY phase of a command (completions are synchronous), the DMA Setup FIS.

Guest controls: every register write (any byte, any order), the command list, command tables,
PRDTs and the received-FIS area's address.

Threats (threat -> mitigation):
- a command list or FIS area outside RAM -> the slot fails with HBFS/TFES; FISes that do not fit
  in RAM are not written; nothing raises;
- PxCI written with ST clear, or on a port without a disk -> ignored (the bits stay clear);
- 32 slots issued at once, repeatedly -> each write runs at most 32 slots, each bounded
  (``ahci_command.py``): no loop the guest can extend;
- writes to read-only bits (CR, FR, CCS, PxTFD, PxSIG, PxSSTS) -> masked or ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ahci_command import Outcome, SlotExecutor
from hv_emu.memory.guest import GuestMemory


@dataclass
class PortState:
    clb: int = 0
    fb: int = 0
    is_: int = 0
    ie: int = 0
    cmd: int = a.CMD_SUD | a.CMD_POD
    tfd: int = a.TFD_RESET
    sig: int = a.SIG_NONE
    sctl: int = 0
    serr: int = 0
    sact: int = 0
    ci: int = 0
    signature_sent: bool = False
    halted: bool = False  # a command failed: nothing runs until the driver clears ST


class AhciPort:
    """Port ``index``; ``executor`` is ``None`` for a port without a disk."""

    def __init__(self, mem: GuestMemory, executor: SlotExecutor | None,
                 enabled: Callable[[], bool] | None = None) -> None:  # fmt: skip
        self.mem = mem
        self.executor = executor
        self._enabled = enabled
        self.st = PortState()
        self.last_error = ""  # why the last command failed, for tests and the event log

    @property
    def has_device(self) -> bool:
        return self.executor is not None

    # ------------------------------------------------------------------ resets
    def hba_reset(self) -> None:
        """GHC.HR: PxIS, PxIE, PxSCTL cleared, PxCMD = SUD|POD, then a port reset. PxCLB and
        PxFB keep their values (QEMU ``ahci_reset``)."""
        st = self.st
        st.is_, st.ie, st.sctl, st.cmd = 0, 0, 0, a.CMD_SUD | a.CMD_POD
        self.port_reset()

    def port_reset(self) -> None:
        st = self.st
        st.serr, st.sact, st.ci = 0, 0, 0
        st.tfd, st.sig, st.signature_sent, st.halted = a.TFD_RESET, a.SIG_NONE, False, False
        st.cmd &= ~(a.CMD_CR | a.CMD_ST)

    # ------------------------------------------------------------------ registers (dwords)
    def read(self, reg: int) -> int:
        st = self.st
        values = {
            a.PX_CLB: st.clb & 0xFFFFFFFF, a.PX_CLBU: st.clb >> 32, a.PX_FB: st.fb & 0xFFFFFFFF,
            a.PX_FBU: st.fb >> 32, a.PX_IS: st.is_, a.PX_IE: st.ie, a.PX_CMD: st.cmd,
            a.PX_TFD: st.tfd, a.PX_SIG: st.sig,
            a.PX_SSTS: a.SSTS_DEVICE if self.has_device else 0, a.PX_SCTL: st.sctl,
            a.PX_SERR: st.serr, a.PX_SACT: st.sact, a.PX_CI: st.ci,
        }  # fmt: skip
        return values.get(reg, 0)

    def write(self, reg: int, value: int, mask: int) -> None:
        """A write of the bytes of ``value`` that ``mask`` selects to the dword at ``reg``."""
        st = self.st
        value &= mask

        def merged(old: int) -> int:
            return (old & ~mask) | value

        if reg == a.PX_CLB:
            st.clb = (st.clb & ~0xFFFFFFFF) | (merged(st.clb & 0xFFFFFFFF) & a.CLB_MASK)
        elif reg == a.PX_CLBU:
            st.clb = merged(st.clb >> 32) << 32 | (st.clb & 0xFFFFFFFF)
        elif reg == a.PX_FB:
            st.fb = (st.fb & ~0xFFFFFFFF) | (merged(st.fb & 0xFFFFFFFF) & a.FB_MASK)
        elif reg == a.PX_FBU:
            st.fb = merged(st.fb >> 32) << 32 | (st.fb & 0xFFFFFFFF)
        elif reg == a.PX_IS:
            st.is_ &= ~value
        elif reg == a.PX_IE:
            st.ie = merged(st.ie) & a.IE_MASK
        elif reg == a.PX_CMD:
            self._write_cmd(merged(st.cmd))
        elif reg == a.PX_SCTL:
            old, st.sctl = st.sctl, merged(st.sctl)
            if old & 0xF == 1 and st.sctl & 0xF != 1:
                self._comreset()
        elif reg == a.PX_SERR:
            st.serr &= ~value
        elif reg == a.PX_SACT:
            if st.cmd & a.CMD_ST:
                st.sact |= value
        elif reg == a.PX_CI and st.cmd & a.CMD_ST and self.executor is not None:
            st.ci |= value
            self._run_issued(value)

    def _write_cmd(self, value: int) -> None:
        st = self.st
        st.cmd = (st.cmd & a.CMD_RO_MASK) | (value & ~(a.CMD_RO_MASK | a.CMD_ICC_MASK))
        if st.cmd & a.CMD_CLO:
            st.tfd &= ~(r.ST_BSY | r.ST_DRQ)
            st.cmd &= ~a.CMD_CLO
        if st.cmd & a.CMD_ST:
            st.cmd |= a.CMD_CR
        elif st.cmd & a.CMD_CR:
            st.cmd &= ~a.CMD_CR
            st.ci = st.sact = 0  # the driver stopped the engine: outstanding commands are gone
            st.halted = False
        if st.cmd & a.CMD_FRE:
            st.cmd |= a.CMD_FR
            if self.has_device and not st.signature_sent:
                self._post_signature()
        else:
            st.cmd &= ~a.CMD_FR

    def _comreset(self) -> None:
        self.port_reset()
        if self.st.cmd & a.CMD_FR and self.has_device:
            self._post_signature()

    def _post_signature(self) -> None:
        st = self.st
        st.signature_sent = True
        st.sig = a.SIG_DISK
        st.tfd = a.SIGNATURE_STATUS | a.SIGNATURE_ERROR << 8
        self._put_fis(a.RFIS_RFIS, a.signature_fis())
        st.is_ |= a.IS_DHRS

    # ------------------------------------------------------------------ commands
    def _run_issued(self, issued: int) -> None:
        assert self.executor is not None
        for slot in range(a.NUM_SLOTS):  # at most 32 slots per write
            bit = 1 << slot
            if self.st.halted:
                return  # a failed command halted the engine: the rest stay issued
            if not issued & bit or not self.st.ci & bit:
                continue
            if self._enabled is not None and not self._enabled():
                outcome = Outcome(0x51, r.ER_ABRT, irq=a.IS_HBFS | a.IS_TFES, serr=a.SERR_E,
                                  reason="bus mastering disabled in the PCI command register")
            else:
                outcome = self.executor.run(self.st.clb + slot * a.HEADER_SIZE)
            self._complete(bit, outcome)

    def _complete(self, bit: int, out: Outcome) -> None:
        st = self.st
        if out.failed and out.ncq_tag is None:
            st.halted = True  # the slot stays in PxCI (AHCI 6.2.2.1; QEMU alike)
        else:
            st.ci &= ~bit
        st.tfd = out.status | out.error << 8
        st.serr |= out.serr
        st.is_ |= out.irq
        if out.failed:
            self.last_error = out.reason
        if out.control is not None:
            if not out.control & a.CONTROL_SRST:  # SRST released: the device resets, signature
                st.signature_sent = False
                self._post_signature()
            return
        if out.ncq_tag is not None:
            done = 0 if out.failed else 1 << out.ncq_tag
            st.sact &= ~done
            self._put_fis(a.RFIS_SDBFIS, a.sdb_fis(out.status, out.error, done))
            st.is_ |= a.IS_SDBS
            return
        if out.pio and not out.failed:
            self._put_fis(a.RFIS_PSFIS, a.pio_setup_fis(out.status, out.nbytes, True))
            st.is_ |= a.IS_PSS
        self._put_fis(a.RFIS_RFIS, a.d2h_fis(out.status, out.error, out.lba))
        st.is_ |= a.IS_DHRS

    def _put_fis(self, offset: int, fis: bytes) -> None:
        """Write ``fis`` into the received-FIS area (only while FR is on, and only in RAM)."""
        pa = self.st.fb + offset
        if self.st.cmd & a.CMD_FR and self.mem.contains(pa, len(fis)):
            self.mem.write(pa, fis)
