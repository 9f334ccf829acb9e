"""The command line ``hv-emu``: a thin face over ``hv_emu.machine``; nothing imports it.

Models: ``main`` (``hv-emu run`` and the sub-command table), ``scan`` (``hv-emu scan``, clamscan
style), ``netopts`` (the ``--net`` family of options), ``args`` (one-line argument errors and exit
codes) and ``demo/`` (``hv-emu demo``, the story told with the real pieces).

Follows: ``README.md`` and ``docs/TUTORIAL.md`` (every command shown there runs in the suite).
Leaves out: a configuration file. The user controls every argument; a bad one ends the command
with one line on standard error and exit status 2.
"""
