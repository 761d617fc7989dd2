"""The ALMA archive side of the console: the demo archive, its local service, the client.

- ``build``: the CASA-simulated demo data sets, packed and cached as the archive delivers them;
- ``service``: a local HTTP service speaking TAP (ADQL on ``ivoa.obscore``), DataLink and
  ranged, checksummed downloads, serving the demo archive;
- ``client``: pyvo queries by project code or MOUS uid, and the selection rules.
"""
