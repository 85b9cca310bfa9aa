"""Outputs to the line: sinks fed from the results database's outbox (inspector/storage/outbox.py).

One module per protocol (mqtt, webhook, modbus, opcua), each a class with open/deliver/close;
``worker.SinkWorker`` runs one sink on its own thread with its own cursor; ``manager.SinkManager``
builds them from the ``sinks:`` config and is all the daemon sees (start/stop/status).
"""
