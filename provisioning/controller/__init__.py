"""The central controller: health ingest into the registry and the fleet web page."""
