"""Frame sources: a watched folder (folder.py) and OpenCV streams (stream.py)."""
