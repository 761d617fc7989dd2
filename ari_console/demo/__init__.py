"""The demo: everything ``ari demo`` and the tests need that a real campaign does not.

- ``archive_build``: the demo ALMA archive (CASA-simulated MOUS packed as the archive packs them);
- ``casa_build``: the CASA script that simulates them (run with the CASA Python, never imported);
- ``archive_service``: the archive's TAP, DataLink and file endpoints on loopback;
- ``testbed``: real sshd and Slurm daemons on loopback;
- ``campaign``: the demo campaign itself (``ari demo``).

Nothing in the rest of ``ari_console`` imports this package except the ``ari demo``
and ``ari archive`` commands.
"""
