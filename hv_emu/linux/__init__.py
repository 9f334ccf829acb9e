"""A small Linux user-mode personality: system calls for static x86 programs.

Models: the slice of the Linux kernel a static program meets between ``execve`` and ``exit``: the
initial stack (``startup.py``), the system-call numbers and constants of both x86 ABIs
(``numbers.py``), each call's argument types (``arguments.py``), files confined to what the user
grants (``files.py``), i386 thread-local storage slots (``tls.py``), signals and the frames
their handlers run on (``signals.py``, ``sigframe.py``) and the system calls themselves
(``syscalls.py``). ``docs/ELF.md`` lists what is supported.

Controls: the guest controls every system-call argument; the user controls the granted files.
"""
