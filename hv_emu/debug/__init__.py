"""Seeing into a running guest: the exit trace, the GDB remote stub and the run report.

Models: ``perf kvm stat``-style tracing of every VM exit (``trace``), a GDB remote-serial-
protocol stub (``gdb_protocol``: the packets; ``gdbstub``: the target it serves over TCP), and a
run's recording (``recorder``; what it keeps: ``marks``) drawn as one HTML page (``report_html``,
``hv-emu run --report``).

Follows: the GDB Remote Serial Protocol (see each module). Leaves out: watchpoints, a
``target.xml``. The guest controls the state shown; the debugger (a local user) controls the stub.
"""
