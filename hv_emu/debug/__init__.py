"""Seeing into a running guest: the exit trace and the GDB remote stub.

Models: ``perf kvm stat``-style tracing of every VM exit (``trace``) and a GDB remote-serial-
protocol stub (``gdb_protocol``: the packets; ``gdbstub``: the target it serves over TCP).

Follows: the GDB Remote Serial Protocol (see each module). Leaves out: watchpoints, a
``target.xml``. The guest controls the state shown; the debugger (a local user) controls the stub.
"""
