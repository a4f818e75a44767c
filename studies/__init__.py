"""Standalone studies beside the sweep (``detbench peers``, ``python studies/peers.py``, ...).

Each is a module with ``main(argv)`` built on detbench's public functions only.
"""
