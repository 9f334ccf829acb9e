"""A small Linux user-mode personality: system calls for static and dynamically linked x86 programs.

Models: the slice of the Linux kernel a program meets between ``execve`` and ``exit``: the initial
stack (``startup.py``), the system-call numbers and constants of both x86 ABIs (``numbers.py``),
each call's argument types (``arguments.py``), files confined to what the user grants (``files.py``,
``streams.py``, ``directories.py``, ``stat.py``, refusals in ``refusals.py``), the read-only sysroot
walked as a chroot (``sysroot.py``), the mmap arena's books (``mmap.py``), i386 thread-local storage
slots (``tls.py``), signals and the frames their handlers run on (``signals.py``, ``sigframe.py``,
their numbers in ``signal_numbers.py``, waiting in ``sigwait.py``) and the system calls
themselves (``syscalls.py``, and ``dynamic.py`` for what ``ld.so`` needs). ``docs/ELF.md`` lists
what is supported.

Controls: the guest controls every system-call argument; the user controls the granted files and
the sysroot.
"""
