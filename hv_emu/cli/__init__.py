"""The command line ``hv-emu``: a thin face over ``hv_emu.machine``; nothing imports it.

Models: ``main`` (the sub-command table, and errors turned into one line and an exit status),
``run`` (``hv-emu run``, its options in ``run_options``), ``scan`` (``hv-emu scan``, clamscan
style), ``netopts`` (the ``--net`` family of options) and ``demo/`` (``hv-emu demo``, the story
told with the real pieces). The one-line argument errors and exit codes it shares with
``guest-tool`` are ``hv_emu/usage.py``.

Follows: ``README.md`` and ``docs/TUTORIAL.md`` (every command shown there runs in the suite).
Leaves out: a configuration file. The user controls every argument; a bad one ends the command
with one line on standard error and exit status 2.
"""
