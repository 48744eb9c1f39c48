"""Functional verification: replay traffic at real servers inside private network namespaces.

``netns`` creates the namespaces, ``guard`` refuses every destination outside them,
``targets`` runs the servers, ``senders`` replays traffic, ``scenarios`` measures effects and
``report`` writes them out. See docs/replay.md.
"""

from __future__ import annotations
