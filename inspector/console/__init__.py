"""The operator's console: a small web app over the results database (``inspector serve``, or
inside ``inspector run`` when ``console.listen`` is set).

Modules: ``config`` (the ``console:`` section), ``auth`` (password hashes, sessions, CSRF),
``queries`` (what the pages read: live cards, keyset pages, neighbours), ``media`` (frames and
heatmaps, only from the configured folders), ``app`` (routes), ``server`` (uvicorn, in the
foreground or on a thread of the daemon). Templates autoescape everything.
"""
