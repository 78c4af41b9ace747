"""Helpers shared by the tests (the fixtures stay in ``conftest.py``).

* :mod:`.lab_exports`: a simulated lab export with known spikes, writers for every source format
  the importer reads, and the standard MATLAB-struct mapping;
* :mod:`.sweeps`: the sweep file and recording of the batch tests;
* :mod:`.readonly`: a folder nobody can write into.
"""
