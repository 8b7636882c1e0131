"""Signals other apps listen to (connectors never imports the apps above it)."""

from django.dispatch import Signal

# Sent inside the transaction of every change to a connector's definition
# (builder, manifest edit, import, install, update), with `connector`.
definition_saved = Signal()
