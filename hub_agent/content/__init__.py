"""The local content cache: a centrally assigned library, synced off-peak, served free.

Pure planners (``plan``, ``window``, ``bucket``) decide; thin appliers (``fetch``,
``sync``, ``importer``, ``nginx``, ``kiwix``) touch the uplink, the disk and processes.
"""
